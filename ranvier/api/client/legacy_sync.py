"""The deprecated sync front ends: ``GET /events`` (old_sync.yaml, and with
``room_id`` peeking_events.yaml), ``GET /events/{eventId}``, ``GET /initialSync``
and ``GET /rooms/{roomId}/initialSync`` (room_initial_sync.yaml).

Parses and validates the query; ranvier/services/legacy_sync.py does the work.
"""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.rooms import ROOM, room_id_param
from ranvier.api.client.sync import query_bool, query_int
from ranvier.api.http import HOMESERVER, json_response
from ranvier.core.ids import RoomID
from ranvier.errors import MatrixError
from ranvier.services.legacy_sync import DEFAULT_EVENTS_TIMEOUT_MS, DEFAULT_INITIAL_SYNC_LIMIT

routes = web.RouteTableDef()

V3 = "/_matrix/client/v3"
#: Messages per room at most, as /messages (room_history.py, Synapse's cap).
MAX_INITIAL_SYNC_LIMIT = 1000
#: Larger timeouts are accepted and held at the service's bound (as /sync).
_MAX_TIMEOUT_PARAM = 2**53


def _limit(request: web.Request) -> int:
    """``limit``: a non-negative integer (400 ``M_INVALID_PARAM`` otherwise), capped."""
    return min(
        query_int(request, "limit", DEFAULT_INITIAL_SYNC_LIMIT, maximum=2**62),
        MAX_INITIAL_SYNC_LIMIT,
    )


@routes.get(V3 + "/events")
async def get_events(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = request.query.get("room_id")
    if room_id is not None and not RoomID.is_valid(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id!r} is not a valid room ID")
    # A timeout that is not a non-negative integer is a bad request (not read as 0).
    timeout_ms = query_int(
        request, "timeout", DEFAULT_EVENTS_TIMEOUT_MS, maximum=_MAX_TIMEOUT_PARAM
    )
    hs = request.app[HOMESERVER]
    body = await hs.legacy_sync.events(
        requester.user_id,
        requester.device_id,
        from_token=request.query.get("from"),
        timeout_ms=timeout_ms,
        room_id=room_id,
        is_guest=requester.is_guest,
    )
    return json_response(body)


@routes.get(V3 + "/events/{eventId}")
async def get_event(request: web.Request) -> web.Response:
    # Not among the endpoints Guest Access opens to guests (nor in Synapse).
    requester = await require_user(request)
    hs = request.app[HOMESERVER]
    body = await hs.legacy_sync.get_event(
        requester.user_id, requester.device_id, request.match_info["eventId"]
    )
    return json_response(body)


@routes.get(V3 + "/initialSync")
async def initial_sync(request: web.Request) -> web.Response:
    requester = await require_user(request)
    limit = _limit(request)
    archived = query_bool(request, "archived")
    hs = request.app[HOMESERVER]
    body = await hs.legacy_sync.initial_sync(
        requester.user_id, requester.device_id, limit=limit, archived=archived
    )
    return json_response(body)


@routes.get(ROOM + "/initialSync")
async def room_initial_sync(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    limit = _limit(request)
    hs = request.app[HOMESERVER]
    body = await hs.legacy_sync.room_initial_sync(
        requester.user_id, requester.device_id, room_id, limit=limit
    )
    return json_response(body)
