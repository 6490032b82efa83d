"""GET /_matrix/client/v3/capabilities (Client-Server API, "Capabilities negotiation")."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS

routes = web.RouteTableDef()


def capabilities(default_room_version: str) -> dict[str, object]:
    """What this server lets clients do (capabilities.yaml); the default room
    version is the configured ``default_room_version``."""
    return {
        "m.room_versions": {
            "default": default_room_version,
            "available": {
                identifier: "stable" if version.stable else "unstable"
                for identifier, version in KNOWN_ROOM_VERSIONS.items()
            },
        },
        "m.change_password": {"enabled": True},
        "m.set_displayname": {"enabled": True},
        "m.set_avatar_url": {"enabled": True},
        # No identity server integration: third-party identifiers cannot be changed.
        "m.3pid_changes": {"enabled": False},
        # POST /v1/login/get_token (MSC3882) is not implemented.
        "m.get_login_token": {"enabled": False},
    }


@routes.get("/_matrix/client/v3/capabilities")
async def get_capabilities(request: web.Request) -> web.Response:
    # Guests may ask too, as in Synapse.
    await require_user(request, allow_guest=True)
    return json_response(
        {"capabilities": capabilities(request.app[HOMESERVER].config.default_room_version)}
    )
