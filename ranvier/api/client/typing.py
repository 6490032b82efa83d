"""PUT /rooms/{roomId}/typing/{userId} (Client-Server API, "Typing Notifications")."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.core.ids import RoomID
from ranvier.errors import MatrixError

routes = web.RouteTableDef()


@routes.put("/_matrix/client/v3/rooms/{roomId}/typing/{userId}")
async def set_typing(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = request.match_info["roomId"]
    user_id = request.match_info["userId"]
    if user_id != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", "Cannot set another user's typing state")
    if not RoomID.is_valid(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id} is not a valid room ID.")
    body = await read_json_object(request)
    typing = body.get("typing")
    if not isinstance(typing, bool):
        raise MatrixError(400, "M_BAD_JSON", "'typing' must be a boolean")
    timeout = body.get("timeout")
    if typing and timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise MatrixError(400, "M_BAD_JSON", "'timeout' must be an integer")
        if timeout < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "'timeout' must not be negative")
    await request.app[HOMESERVER].typing.set_typing(
        room_id, user_id, typing, timeout if typing else None
    )
    return json_response({})
