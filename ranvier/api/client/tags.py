"""Room tags: GET /user/{userId}/rooms/{roomId}/tags, PUT and DELETE
/user/{userId}/rooms/{roomId}/tags/{tag} (Client-Server API, "Room Tagging").

Like account data, only the user's own: 403 ``M_FORBIDDEN`` otherwise; a
malformed room ID is 400 ``M_INVALID_PARAM``.
"""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.core.ids import RoomID
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

TAGS = "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags"


async def _owner_and_room(request: web.Request, verb: str) -> tuple[str, str]:
    requester = await require_user(request)
    if request.match_info["userId"] != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", f"Cannot {verb} tags for other users.")
    room_id = request.match_info["roomId"]
    if not RoomID.is_valid(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id} is not a valid room ID.")
    return requester.user_id, room_id


@routes.get(TAGS)
async def get_tags(request: web.Request) -> web.Response:
    user_id, room_id = await _owner_and_room(request, "read")
    tags = await request.app[HOMESERVER].account_data.tags.get_tags(user_id, room_id)
    return json_response({"tags": tags})


@routes.put(TAGS + "/{tag}")
async def put_tag(request: web.Request) -> web.Response:
    user_id, room_id = await _owner_and_room(request, "add")
    body = await read_json_object(request)
    await request.app[HOMESERVER].account_data.tags.set_tag(
        user_id, room_id, request.match_info["tag"], body
    )
    return json_response({})


@routes.delete(TAGS + "/{tag}")
async def delete_tag(request: web.Request) -> web.Response:
    user_id, room_id = await _owner_and_room(request, "remove")
    await request.app[HOMESERVER].account_data.tags.delete_tag(
        user_id, room_id, request.match_info["tag"]
    )
    return json_response({})
