"""Reading a room's events over federation (Server-Server API, "Retrieving
events", "Backfilling and retrieving missing events", "Room State Resolution";
timestamp_to_event is MSC3030): GET /v1/event, /v1/state, /v1/state_ids,
/v1/event_auth, /v1/backfill, /v1/timestamp_to_event, POST
/v1/get_missing_events. Parameters are checked here; who may read what is
``services/federation/reads.py``. Room-scoped requests from a server the
room's ACL denies are refused (403 ``M_FORBIDDEN``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.client.room_history import direction_param
from ranvier.api.client.sync import MAX_DB_INTEGER, query_int
from ranvier.api.federation.auth import authenticate_server
from ranvier.api.federation.common import required_query, room_request
from ranvier.api.http import HOMESERVER, json_response
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

V1 = "/_matrix/federation/v1"
#: get_missing_events: "limit ... Defaults to 10"; the service caps it further.
DEFAULT_MISSING_EVENTS_LIMIT = 10
#: Event IDs one request may name (latest/earliest events, backfill ``v``).
MAX_EVENT_IDS = 100


@routes.get(V1 + "/event/{eventId}")
async def get_event(request: web.Request) -> web.Response:
    origin = (await authenticate_server(request)).origin
    hs = request.app[HOMESERVER]
    answer = await hs.federation_reads.event(origin, request.match_info["eventId"])
    # Not room-scoped by its path, but the event's room's ACL applies all the same.
    await hs.server_acls.check(origin, answer["pdus"][0]["room_id"])
    return json_response(answer)


@routes.get(V1 + "/state/{roomId}")
async def get_state(request: web.Request) -> web.Response:
    room = await room_request(request)
    event_id = required_query(request, "event_id")
    return json_response(await room.hs.federation_reads.state(room.origin, room.room_id, event_id))


@routes.get(V1 + "/state_ids/{roomId}")
async def get_state_ids(request: web.Request) -> web.Response:
    room = await room_request(request)
    event_id = required_query(request, "event_id")
    reads = room.hs.federation_reads
    return json_response(await reads.state_ids(room.origin, room.room_id, event_id))


@routes.get(V1 + "/event_auth/{roomId}/{eventId}")
async def get_event_auth(request: web.Request) -> web.Response:
    room = await room_request(request)
    event_id = request.match_info["eventId"]
    reads = room.hs.federation_reads
    return json_response(await reads.event_auth(room.origin, room.room_id, event_id))


def _event_ids(value: Any, name: str, *, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MatrixError(400, "M_BAD_JSON", f"{name} must be an array of event IDs")
    if len(value) > MAX_EVENT_IDS:
        raise MatrixError(400, "M_BAD_JSON", f"At most {MAX_EVENT_IDS} {name}")
    return value


def _non_negative_int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DB_INTEGER:
        raise MatrixError(400, "M_BAD_JSON", f"{name} must be a non-negative integer")
    return value


@routes.post(V1 + "/get_missing_events/{roomId}")
async def get_missing_events(request: web.Request) -> web.Response:
    room = await room_request(request)
    body = room.content
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
    if "latest_events" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing latest_events")
    latest = _event_ids(body["latest_events"], "latest_events", required=True)
    earliest = _event_ids(body.get("earliest_events"), "earliest_events", required=False)
    limit = _non_negative_int(body, "limit", DEFAULT_MISSING_EVENTS_LIMIT)
    min_depth = _non_negative_int(body, "min_depth", 0)
    answer = await room.hs.federation_reads.get_missing_events(
        room.origin, room.room_id, earliest, latest, limit, min_depth
    )
    return json_response(answer)


@routes.get(V1 + "/backfill/{roomId}")
async def backfill(request: web.Request) -> web.Response:
    room = await room_request(request)
    from_ids = request.query.getall("v", [])
    if not from_ids:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing v parameter")
    if len(from_ids) > MAX_EVENT_IDS:
        raise MatrixError(400, "M_INVALID_PARAM", f"At most {MAX_EVENT_IDS} v parameters")
    required_query(request, "limit")
    limit = query_int(request, "limit", 0, maximum=MAX_DB_INTEGER)
    reads = room.hs.federation_reads
    return json_response(await reads.backfill(room.origin, room.room_id, from_ids, limit))


@routes.get(V1 + "/timestamp_to_event/{roomId}")
async def timestamp_to_event(request: web.Request) -> web.Response:
    room = await room_request(request)
    required_query(request, "ts")
    timestamp = query_int(request, "ts", 0, maximum=MAX_DB_INTEGER)
    direction = direction_param(request, required=True)
    reads = room.hs.federation_reads
    answer = await reads.timestamp_to_event(room.origin, room.room_id, timestamp, direction)
    return json_response(answer)
