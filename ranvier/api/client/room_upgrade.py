"""``POST /rooms/{roomId}/upgrade`` (Client-Server API, "Room Upgrades";
room_upgrades.yaml). The work is in ranvier/services/room_upgrade.py."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.rooms import room_id_param
from ranvier.api.http import HOMESERVER, json_response, read_json_object

routes = web.RouteTableDef()


@routes.post("/_matrix/client/v3/rooms/{roomId}/upgrade")
async def upgrade_room(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    body = await read_json_object(request)
    hs = request.app[HOMESERVER]
    replacement = await hs.room_upgrades.upgrade(requester, room_id, body)
    return json_response({"replacement_room": replacement})
