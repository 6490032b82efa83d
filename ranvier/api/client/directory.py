"""Room aliases and room directory visibility (Client-Server API, "Room aliases",
"Published room directory"; directory.yaml, list_public_rooms.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.rooms import room_id_param
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

ALIAS = "/_matrix/client/v3/directory/room/{roomAlias}"
LIST = "/_matrix/client/v3/directory/list/room/{roomId}"


@routes.get(ALIAS)
async def get_room_id_by_alias(request: web.Request) -> web.Response:
    hs = request.app[HOMESERVER]
    room_id, servers = await hs.federation_queries.resolve_alias(request.match_info["roomAlias"])
    return json_response({"room_id": room_id, "servers": servers})


@routes.put(ALIAS)
async def set_room_alias(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    room_id = body.get("room_id")
    if not isinstance(room_id, str):
        raise MatrixError(400, "M_BAD_JSON", "room_id must be a string")
    await request.app[HOMESERVER].rooms.create_alias(
        requester.user_id, request.match_info["roomAlias"], room_id
    )
    return json_response({})


@routes.delete(ALIAS)
async def delete_room_alias(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await request.app[HOMESERVER].rooms.delete_alias(
        requester.user_id, request.match_info["roomAlias"]
    )
    return json_response({})


@routes.get(LIST)
async def get_room_visibility(request: web.Request) -> web.Response:
    room_id = room_id_param(request)
    room = await request.app[HOMESERVER].rooms.require_room(room_id)
    return json_response({"visibility": "public" if room.is_public else "private"})


@routes.put(LIST)
async def set_room_visibility(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    body = await read_json_object(request)
    visibility = body.get("visibility", "public")
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
    await request.app[HOMESERVER].rooms.set_directory_visibility(
        requester.user_id, room_id, visibility == "public"
    )
    return json_response({})
