"""Server-side key backup endpoints (Client-Server API, "Server-side key
backups"; OpenAPI key_backup.yaml). The rules live in ranvier/services/key_backup.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.services.key_backup import (
    parse_key_backup,
    parse_key_backup_data,
    parse_room_key_backup,
)

routes = web.RouteTableDef()
V3 = "/_matrix/client/v3/room_keys"


@routes.post(V3 + "/version")
async def create_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    return json_response({"version": await hs.key_backup.create_version(requester.user_id, body)})


@routes.get(V3 + "/version")
async def get_current_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    return json_response(await hs.key_backup.get_version(requester.user_id, None))


@routes.get(V3 + "/version/{version}")
async def get_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    return json_response(
        await hs.key_backup.get_version(requester.user_id, request.match_info["version"])
    )


@routes.put(V3 + "/version/{version}")
async def update_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    await hs.key_backup.update_version(requester.user_id, request.match_info["version"], body)
    return json_response({})


@routes.delete(V3 + "/version/{version}")
async def delete_version(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    await hs.key_backup.delete_version(requester.user_id, request.match_info["version"])
    return json_response({})


@routes.put(V3 + "/keys")
async def put_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    keys = parse_key_backup(await read_json_object(request))
    return json_response(
        await hs.key_backup.put_keys(requester.user_id, request.query.get("version"), keys)
    )


@routes.put(V3 + "/keys/{room_id}")
async def put_room_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    keys = parse_room_key_backup(request.match_info["room_id"], body)
    return json_response(
        await hs.key_backup.put_keys(requester.user_id, request.query.get("version"), keys)
    )


@routes.put(V3 + "/keys/{room_id}/{session_id}")
async def put_session_key(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await read_json_object(request)
    key = parse_key_backup_data(request.match_info["room_id"], request.match_info["session_id"], body)
    return json_response(
        await hs.key_backup.put_keys(requester.user_id, request.query.get("version"), [key])
    )


def _location(request: web.Request) -> dict[str, Any]:
    return {
        "room_id": request.match_info.get("room_id"),
        "session_id": request.match_info.get("session_id"),
    }


@routes.get(V3 + "/keys")
@routes.get(V3 + "/keys/{room_id}")
@routes.get(V3 + "/keys/{room_id}/{session_id}")
async def get_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    return json_response(
        await hs.key_backup.get_keys(
            requester.user_id, request.query.get("version"), **_location(request)
        )
    )


@routes.delete(V3 + "/keys")
@routes.delete(V3 + "/keys/{room_id}")
@routes.delete(V3 + "/keys/{room_id}/{session_id}")
async def delete_keys(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    return json_response(
        await hs.key_backup.delete_keys(
            requester.user_id, request.query.get("version"), **_location(request)
        )
    )
