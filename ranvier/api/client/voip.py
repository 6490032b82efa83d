"""GET /_matrix/client/v3/voip/turnServer (Client-Server API, "Voice over IP").

Credentials follow the TURN REST API scheme coturn implements with
``use-auth-secret`` (draft-uberti-behave-turn-rest-00, as Synapse does):
username ``<expiry unix seconds>:<user ID>``, password the base64 of
HMAC-SHA1(shared secret, username). Without TURN configured the answer is an
empty object (Synapse does the same; the spec defines no error for it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response
from ranvier.config import TurnConfig

routes = web.RouteTableDef()


def turn_credentials(turn: TurnConfig, user_id: str, now_ms: int) -> dict[str, object]:
    """The turnServer response for ``user_id`` at ``now_ms``, or {} without TURN."""
    if not turn.uris or not turn.shared_secret:
        return {}
    expiry = (now_ms + turn.user_lifetime) // 1000
    username = f"{expiry}:{user_id}"
    digest = hmac.new(turn.shared_secret.encode(), username.encode(), hashlib.sha1).digest()
    return {
        "username": username,
        "password": base64.b64encode(digest).decode("ascii"),
        "uris": list(turn.uris),
        "ttl": turn.user_lifetime // 1000,
    }


@routes.get("/_matrix/client/v3/voip/turnServer")
async def get_turn_server(request: web.Request) -> web.Response:
    # Guests may place calls too (Synapse's turn_allow_guests defaults to true).
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    return json_response(turn_credentials(hs.config.turn, requester.user_id, hs.clock_ms()))
