"""Account data, global and per room (Client-Server API, "Client Config", account-data.yaml).

Users may only read and write their own account data: 403 ``M_FORBIDDEN``
otherwise. A malformed room ID is 400 ``M_INVALID_PARAM``.
"""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.core.ids import RoomID
from ranvier.errors import MatrixError
from ranvier.services.requester import Requester

routes = web.RouteTableDef()

GLOBAL_PATH = "/_matrix/client/v3/user/{userId}/account_data/{type}"
ROOM_PATH = "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}"


def _own_user(request: web.Request, requester: Requester, verb: str) -> str:
    user_id = request.match_info["userId"]
    if user_id != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", f"Cannot {verb} account data for other users.")
    return user_id


def _room_id(request: web.Request) -> str:
    room_id = request.match_info["roomId"]
    if not RoomID.is_valid(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id} is not a valid room ID.")
    return room_id


async def _put(request: web.Request, room_id: str | None, user_id: str) -> web.Response:
    body = await read_json_object(request)
    await request.app[HOMESERVER].account_data.set_account_data(
        user_id, room_id, request.match_info["type"], body
    )
    return json_response({})


async def _get(request: web.Request, room_id: str | None, user_id: str) -> web.Response:
    content = await request.app[HOMESERVER].account_data.get_account_data(
        user_id, room_id, request.match_info["type"]
    )
    if content is None:
        raise MatrixError(404, "M_NOT_FOUND", "Account data not found.")
    return json_response(content)


@routes.put(GLOBAL_PATH)
async def set_account_data(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return await _put(request, None, _own_user(request, requester, "add"))


@routes.get(GLOBAL_PATH)
async def get_account_data(request: web.Request) -> web.Response:
    requester = await require_user(request)
    return await _get(request, None, _own_user(request, requester, "get"))


@routes.put(ROOM_PATH)
async def set_room_account_data(request: web.Request) -> web.Response:
    requester = await require_user(request)
    user_id = _own_user(request, requester, "add")
    return await _put(request, _room_id(request), user_id)


@routes.get(ROOM_PATH)
async def get_room_account_data(request: web.Request) -> web.Response:
    requester = await require_user(request)
    user_id = _own_user(request, requester, "get")
    return await _get(request, _room_id(request), user_id)
