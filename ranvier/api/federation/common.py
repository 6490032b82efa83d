"""What the room-scoped federation endpoints share: the authenticated origin,
the room ID from the path, and the room's server ACL (Server-Server API,
"Server Access Control Lists": a denied server gets 403 ``M_FORBIDDEN``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ranvier.api.federation.auth import authenticate_server
from ranvier.api.http import HOMESERVER
from ranvier.core.ids import RoomID
from ranvier.errors import MatrixError
from ranvier.homeserver import Homeserver


@dataclass(frozen=True, slots=True)
class RoomRequest:
    hs: Homeserver
    origin: str
    room_id: str
    content: Any


async def room_request(request: web.Request) -> RoomRequest:
    """Authenticate, validate ``{roomId}`` and apply the room's ACL to the origin."""
    authenticated = await authenticate_server(request)
    room_id = request.match_info["roomId"]
    if not RoomID.is_valid(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id!r} is not a valid room ID")
    hs = request.app[HOMESERVER]
    await hs.server_acls.check(authenticated.origin, room_id)
    return RoomRequest(hs, authenticated.origin, room_id, authenticated.content)


def required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing {name} parameter")
    return value
