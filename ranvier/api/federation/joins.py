"""Joining rooms of this server over federation (Server-Server API, "Joining
Rooms"): GET /v1/make_join, PUT /v1/send_join (deprecated; answered as the
v1 spec says, ``[200, {...}]``) and PUT /v2/send_join. The checks (the room
in the path is the event's room, CVE-2020-26257; the sender is of the origin;
the room version) are ``services/federation/joins.py``; the room's server
ACL is applied here first.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.federation.common import room_request
from ranvier.api.http import json_response, parse_json
from ranvier.core.ids import UserID
from ranvier.core.input_limits import MAX_FEDERATED_ITEM_DEPTH
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


@routes.get(V1 + "/make_join/{roomId}/{userId}")
async def make_join(request: web.Request) -> web.Response:
    room = await room_request(request)
    user_id = request.match_info["userId"]
    if not UserID.is_valid(user_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id!r} is not a valid user ID")
    # "ver: The room versions the sending server has support for. Defaults to [1]."
    versions = request.query.getall("ver", ["1"])
    answer = await room.hs.federation_joins.make_join(room.origin, room.room_id, user_id, versions)
    return json_response(answer)


async def _send_join(request: web.Request) -> dict[str, Any]:
    room = await room_request(request)
    # The event is one PDU: the depth limit of one federated item.
    pdu = parse_json(await request.read(), max_depth=MAX_FEDERATED_ITEM_DEPTH)
    if not isinstance(pdu, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
    joins = room.hs.federation_joins
    answer: dict[str, Any] = await joins.send_join(
        room.origin, room.room_id, request.match_info["eventId"], pdu
    )
    return answer


@routes.put(V1 + "/send_join/{roomId}/{eventId}")
async def send_join_v1(request: web.Request) -> web.Response:
    answer = await _send_join(request)
    # v1's answer: the status and the room's state as an array, without the
    # v2 fields (event, members_omitted, servers_in_room).
    v1 = {key: answer[key] for key in ("origin", "auth_chain", "state")}
    return json_response([200, v1])


@routes.put(V2 + "/send_join/{roomId}/{eventId}")
async def send_join_v2(request: web.Request) -> web.Response:
    return json_response(await _send_join(request))
