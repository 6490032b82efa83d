"""Room history: ``/messages``, ``/context`` and ``timestamp_to_event``.

Client-Server API: message_pagination.yaml, event_context.yaml and
``GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`` (MSC3030).
The work is in ranvier/services/pagination.py.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.rooms import ROOM, room_id_param
from ranvier.api.client.sync import MAX_DB_INTEGER, query_int
from ranvier.api.http import HOMESERVER, json_items_response, json_response, parse_json
from ranvier.core.filters import FilterError, RoomEventFilter, parse_room_event_filter
from ranvier.core.ids import EventID
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

#: message_pagination.yaml: "limit ... Default: 10"; Synapse caps it at 1000.
DEFAULT_MESSAGES_LIMIT = 10
MAX_MESSAGES_LIMIT = 1000
#: event_context.yaml: default 10; capped like /messages.
DEFAULT_CONTEXT_LIMIT = 10
MAX_CONTEXT_LIMIT = 100


def room_event_filter(request: web.Request) -> RoomEventFilter:
    """The ``filter`` query parameter: a JSON RoomEventFilter."""
    text = request.query.get("filter")
    if text is None or text == "":
        return RoomEventFilter()
    value = parse_json(text, "filter")
    try:
        return parse_room_event_filter(value)
    except FilterError as exc:
        raise MatrixError(400, exc.errcode, exc.message) from None


def direction_param(request: web.Request, *, required: bool) -> Literal["f", "b"]:
    value = request.query.get("dir")
    if value is None:
        if required:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing dir parameter")
        return "f"  # message_pagination.yaml requires it; Synapse defaults to f
    if value == "f":
        return "f"
    if value == "b":
        return "b"
    raise MatrixError(400, "M_INVALID_PARAM", "dir must be f or b")


@routes.get(ROOM + "/messages")
async def get_messages(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    direction = direction_param(request, required=False)
    limit = min(query_int(request, "limit", DEFAULT_MESSAGES_LIMIT), MAX_MESSAGES_LIMIT)
    event_filter = room_event_filter(request)
    if event_filter.limit is not None:
        # RoomEventFilter.limit, "the maximum number of events to return", bounds
        # the page as the query's own limit does; the smaller one wins.
        limit = min(limit, event_filter.limit)
    hs = request.app[HOMESERVER]
    body = await hs.pagination.messages(
        requester.user_id,
        requester.device_id,
        room_id,
        from_token=request.query.get("from") or None,
        to_token=request.query.get("to") or None,
        direction=direction,
        limit=limit,
        event_filter=event_filter,
    )
    return json_items_response(body)


@routes.get(ROOM + "/context/{eventId}")
async def get_context(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    event_id = request.match_info["eventId"]
    if not EventID.is_valid(event_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{event_id!r} is not a valid event ID")
    limit = min(query_int(request, "limit", DEFAULT_CONTEXT_LIMIT), MAX_CONTEXT_LIMIT)
    event_filter = room_event_filter(request)
    hs = request.app[HOMESERVER]
    body = await hs.pagination.context(
        requester.user_id,
        requester.device_id,
        room_id,
        event_id,
        limit=limit,
        event_filter=event_filter,
    )
    return json_items_response(body)


@routes.get("/_matrix/client/v1/rooms/{roomId}/timestamp_to_event")
async def timestamp_to_event(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    if request.query.get("ts") is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing ts parameter")
    # A timestamp beyond what the database stores matches nothing: 400, not a 500.
    timestamp = query_int(request, "ts", 0, maximum=MAX_DB_INTEGER)
    direction = direction_param(request, required=True)
    hs = request.app[HOMESERVER]
    body = await hs.pagination.timestamp_to_event(requester.user_id, room_id, timestamp, direction)
    return json_response(body)
