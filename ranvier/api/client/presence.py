"""GET/PUT /presence/{userId}/status (Client-Server API, "Presence", presence.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.core.ids import UserID
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

PATH = "/_matrix/client/v3/presence/{userId}/status"


@routes.put(PATH)
async def set_presence(request: web.Request) -> web.Response:
    requester = await require_user(request)
    user_id = request.match_info["userId"]
    if user_id != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", "Can only set your own presence state")
    body = await read_json_object(request)
    state = body.get("presence")
    if not isinstance(state, str):
        raise MatrixError(400, "M_BAD_JSON", "'presence' must be a string")
    status_msg = body.get("status_msg")
    if status_msg is not None and not isinstance(status_msg, str):
        raise MatrixError(400, "M_BAD_JSON", "'status_msg' must be a string")
    await request.app[HOMESERVER].presence.set_presence(user_id, state, status_msg)
    return json_response({})


@routes.get(PATH)
async def get_presence(request: web.Request) -> web.Response:
    requester = await require_user(request)
    user_id = request.match_info["userId"]
    if not UserID.is_valid(user_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id} is not a valid user ID")
    content = await request.app[HOMESERVER].presence.get_presence(requester.user_id, user_id)
    return json_response(content)
