"""Room aliases, the published room directory and room visibility in it
(Client-Server API, "Room aliases", "Published room directory"; directory.yaml,
list_public_rooms.yaml). The directory itself is ranvier/services/directory.py,
shared with the federation's /publicRooms."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.rooms import room_id_param
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.core.ids import is_valid_server_name
from ranvier.errors import MatrixError
from ranvier.services.directory import (
    MAX_PUBLIC_ROOMS_LIMIT,
    PublicRoomsQuery,
    parse_public_rooms_body,
)

routes = web.RouteTableDef()

ALIAS = "/_matrix/client/v3/directory/room/{roomAlias}"
LIST = "/_matrix/client/v3/directory/list/room/{roomId}"
PUBLIC_ROOMS = "/_matrix/client/v3/publicRooms"


def clamped_int(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter, clamped to ``maximum`` however large (huge
    limits are not an error, the spec says servers impose a maximum); below
    ``minimum`` or not an integer → 400 M_INVALID_PARAM."""
    value = request.query.get(name)
    if value is None:
        return default
    digits = value[1:] if value.startswith("-") else value
    if not digits.isascii() or not digits.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer.")
    if len(digits) > 18:  # far beyond any maximum; int() of 5000 digits would raise
        number = maximum if not value.startswith("-") else minimum - 1
    else:
        number = int(value)
    if number < minimum:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be at least {minimum}.")
    return min(number, maximum)


def query_bool(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false")
    if value not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false.")
    return value == "true"


def parse_public_rooms_query(request: web.Request) -> PublicRoomsQuery:
    """GET /publicRooms (client or federation): limit, since, the networks."""
    limit = clamped_int(request, "limit", 0, 0, MAX_PUBLIC_ROOMS_LIMIT)
    instance = request.query.get("third_party_instance_id")
    include_all = query_bool(request, "include_all_networks")
    if include_all and instance is not None:
        raise MatrixError(
            400,
            "M_INVALID_PARAM",
            "include_all_networks and third_party_instance_id exclude each other.",
        )
    return PublicRoomsQuery(
        limit=limit or None,
        since=request.query.get("since") or None,
        include_all_networks=include_all,
        third_party_instance_id=instance,
    )


def _server_param(request: web.Request) -> str | None:
    server = request.query.get("server")
    if server is not None and not is_valid_server_name(server):
        raise MatrixError(400, "M_INVALID_PARAM", "server must be a server name.")
    return server


@routes.get(PUBLIC_ROOMS)
async def get_public_rooms(request: web.Request) -> web.Response:
    """Open to anyone for our own directory (list_public_rooms.yaml has no
    security); another server's needs a user, as asking costs a federation call."""
    hs = request.app[HOMESERVER]
    server = _server_param(request)
    if server is not None and server != hs.server_name:
        await require_user(request, allow_guest=True)
    query = parse_public_rooms_query(request)
    return json_response(await hs.directory.public_rooms(query, server))


@routes.post(PUBLIC_ROOMS)
async def query_public_rooms(request: web.Request) -> web.Response:
    await require_user(request, allow_guest=True)
    server = _server_param(request)
    query = parse_public_rooms_body(await read_json_object(request))
    return json_response(await request.app[HOMESERVER].directory.public_rooms(query, server))


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
    visibility = await request.app[HOMESERVER].directory.get_visibility(room_id)
    return json_response({"visibility": visibility})


@routes.put(LIST)
async def set_room_visibility(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    body = await read_json_object(request)
    visibility = body.get("visibility", "public")
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
    await request.app[HOMESERVER].directory.set_visibility(requester, room_id, visibility)
    return json_response({})
