"""GET /_matrix/client/versions (Client-Server API, "API Versions")."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.http import json_response

routes = web.RouteTableDef()

# The spec releases this server speaks. Clients need at least one entry to talk to us
# at all; we target the current release, v1.19, and its endpoints land issue by issue.
# Add a release here only when the server is compatible with it, and list features
# behind unstable flags (MSC numbers) in UNSTABLE_FEATURES as they are implemented.
SUPPORTED_VERSIONS: tuple[str, ...] = ("v1.19",)
UNSTABLE_FEATURES: dict[str, bool] = {}


@routes.get("/_matrix/client/versions")
async def get_versions(request: web.Request) -> web.Response:
    # No authentication: clients call this before logging in.
    return json_response(
        {"versions": list(SUPPORTED_VERSIONS), "unstable_features": UNSTABLE_FEATURES}
    )
