"""Rooms: create, send, state, redact, read events, state and members.

Client-Server API: create_room.yaml, room_send.yaml, room_state.yaml,
redaction.yaml, rooms.yaml, directory.yaml (``/rooms/{roomId}/aliases``).
Domain logic lives in ranvier/services/rooms.py; these handlers parse,
authenticate and format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_items_response, json_response, read_json_object
from ranvier.core.ids import EventID, RoomID
from ranvier.errors import MatrixError
from ranvier.services.client_events import serialize_events
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec, StoredEvent
from ranvier.services.sync import parse_pagination_token
from ranvier.services.visibility import filter_events_for_user

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

routes = web.RouteTableDef()

# Guests (Client-Server API, "Guest Access", Client behaviour) may read a room's
# state, events and members, and send any event or state event (v1.2); those
# handlers pass ``allow_guest=True``. Creating rooms, redacting, joined_members
# and aliases stay closed to them, as in Synapse.

ROOM = "/_matrix/client/v3/rooms/{roomId}"
MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


def room_id_param(request: web.Request) -> str:
    room_id = request.match_info["roomId"]
    if not RoomID.is_valid(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id!r} is not a valid room ID")
    return room_id


async def _serialize(
    hs: Homeserver, requester: Requester, events: list[StoredEvent]
) -> list[dict[str, Any]]:
    return await serialize_events(
        hs, events, user_id=requester.user_id, device_id=requester.device_id
    )


@routes.post("/_matrix/client/v3/createRoom")
async def create_room_handler(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    hs = request.app[HOMESERVER]
    room_id = await create_room(hs.rooms, requester, body)
    return json_response({"room_id": room_id})


@routes.put(ROOM + "/send/{eventType}/{txnId}")
async def send_message(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    event_type = request.match_info["eventType"]
    content = await read_json_object(request)
    hs = request.app[HOMESERVER]
    event_id = await hs.rooms.send_client_event(
        requester, room_id, EventSpec(event_type, content), request.match_info["txnId"]
    )
    return json_response({"event_id": event_id})


async def _put_state(request: web.Request, state_key: str) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    content = await read_json_object(request)
    hs = request.app[HOMESERVER]
    event_id = await hs.rooms.send_state_event(
        requester.user_id, room_id, request.match_info["eventType"], state_key, content
    )
    return json_response({"event_id": event_id})


async def _get_state(request: web.Request, state_key: str) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    event_format = request.query.get("format", "content")
    if event_format not in ("content", "event"):
        raise MatrixError(400, "M_INVALID_PARAM", "format must be content or event")
    hs = request.app[HOMESERVER]
    group = await hs.rooms.visible_state_group(requester.user_id, room_id)
    event_type = request.match_info["eventType"]
    ids = await hs.rooms.state_store.get_state_ids_for_keys(group, [(event_type, state_key)])
    event_id = ids.get((event_type, state_key))
    stored = await hs.rooms.events.get_event(event_id) if event_id is not None else None
    if stored is None:
        raise MatrixError(404, "M_NOT_FOUND", f"No {event_type} state with key {state_key!r}")
    [client_event] = await _serialize(hs, requester, [stored])
    return json_response(client_event if event_format == "event" else client_event["content"])


@routes.put(ROOM + "/state/{eventType}")
async def put_state_no_key(request: web.Request) -> web.Response:
    return await _put_state(request, "")


@routes.put(ROOM + "/state/{eventType}/{stateKey:.*}")
async def put_state(request: web.Request) -> web.Response:
    return await _put_state(request, request.match_info["stateKey"])


@routes.get(ROOM + "/state/{eventType}")
async def get_state_no_key(request: web.Request) -> web.Response:
    return await _get_state(request, "")


@routes.get(ROOM + "/state/{eventType}/{stateKey:.*}")
async def get_state_event(request: web.Request) -> web.Response:
    return await _get_state(request, request.match_info["stateKey"])


@routes.get(ROOM + "/state")
async def get_room_state(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    hs = request.app[HOMESERVER]
    group = await hs.rooms.visible_state_group(requester.user_id, room_id)
    state = await hs.rooms.state_store.get_state_ids(group)
    events = await hs.rooms.events.get_events_ordered(list(state.values()))
    return json_items_response(await _serialize(hs, requester, events))


@routes.put(ROOM + "/redact/{eventId}/{txnId}")
async def redact_event(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    event_id = request.match_info["eventId"]
    if not EventID.is_valid(event_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{event_id!r} is not a valid event ID")
    body = await read_json_object(request)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "reason must be a string")
    hs = request.app[HOMESERVER]
    redaction_id = await hs.rooms.redact_client_event(
        requester, room_id, event_id, reason, request.match_info["txnId"]
    )
    return json_response({"event_id": redaction_id})


@routes.get(ROOM + "/event/{eventId}")
async def get_event(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    event_id = request.match_info["eventId"]
    hs = request.app[HOMESERVER]
    not_found = MatrixError(
        404, "M_NOT_FOUND", "Event not found or you do not have permission to read it"
    )
    stored = await hs.rooms.events.get_event(event_id)
    if stored is None or stored.room_id != room_id:
        raise not_found
    visible = await filter_events_for_user(hs, requester.user_id, [stored])
    if not visible:
        raise not_found
    [client_event] = await _serialize(hs, requester, visible)
    return json_response(client_event)


async def _members_group_at(
    hs: Homeserver, user_id: str, room_id: str, visible_group: int, at: str
) -> int:
    """The state group of ``GET /members?at=``: the state after the room's last
    event at the token (members.yaml), which the user must be allowed to see.

    As Synapse's ``get_state_events(at_token=...)``: 404 without an event at the
    token, 403 when history visibility hides that event (e.g. a token from
    before the user joined a ``joined`` room). A user who left reads at most
    the state when they left (``visible_group``).
    """
    position = parse_pagination_token(at)  # 400 M_INVALID_PARAM for a bad token
    current_group = await hs.rooms.events.current_state_group(room_id)
    if visible_group != current_group:
        membership = await hs.rooms.store.get_membership(room_id, user_id)
        if membership is not None:
            position = min(position, membership.stream_ordering)
    event = await hs.rooms.events.last_event_at_or_before(room_id, position)
    if event is None or event.state_group is None:
        raise MatrixError(404, "M_NOT_FOUND", f"No event in {room_id} at token {at!r}")
    # The state at the token is the question, whoever sent the event there.
    if not await filter_events_for_user(hs, user_id, [event], include_ignored=True):
        raise MatrixError(
            403, "M_FORBIDDEN", f"You may not see the members of {room_id} at token {at!r}"
        )
    return event.state_group


def _membership_filter(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in MEMBERSHIPS:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be one of {', '.join(MEMBERSHIPS)}")
    return value


@routes.get(ROOM + "/members")
async def get_members(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    membership = _membership_filter(request, "membership")
    not_membership = _membership_filter(request, "not_membership")
    hs = request.app[HOMESERVER]
    group = await hs.rooms.visible_state_group(requester.user_id, room_id)
    at = request.query.get("at")
    if at is not None:
        group = await _members_group_at(hs, requester.user_id, room_id, group, at)
    state = await hs.rooms.state_store.get_state_ids(group)
    member_ids = [eid for (etype, _), eid in state.items() if etype == "m.room.member"]
    events = await hs.rooms.events.get_events_ordered(member_ids)

    def wanted(kind: str | None) -> bool:
        if membership is None and not_membership is None:
            return True
        # "either the membership *is* the same as membership **or** *is not*
        # the same as not_membership".
        return (membership is not None and kind == membership) or (
            not_membership is not None and kind != not_membership
        )

    chosen = [e for e in events if wanted(e.event.membership)]
    return json_items_response({"chunk": await _serialize(hs, requester, chosen)})


@routes.get(ROOM + "/joined_members")
async def get_joined_members(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    hs = request.app[HOMESERVER]
    await hs.rooms.require_room(room_id)
    if await hs.rooms.get_membership(room_id, requester.user_id) != "join":
        raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")
    members = await hs.rooms.store.members(room_id, ("join",))
    events = await hs.rooms.events.get_events([m.event_id for m in members])
    joined: dict[str, dict[str, Any]] = {}
    for member in members:
        stored = events.get(member.event_id)
        content = stored.event.content if stored is not None else {}
        info: dict[str, Any] = {}
        if isinstance(content.get("displayname"), str):
            info["display_name"] = content["displayname"]
        if isinstance(content.get("avatar_url"), str):
            info["avatar_url"] = content["avatar_url"]
        joined[member.user_id] = info
    return json_response({"joined": joined})


@routes.get(ROOM + "/aliases")
async def get_local_aliases(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    hs = request.app[HOMESERVER]
    aliases = await hs.rooms.local_aliases(requester.user_id, room_id)
    return json_response({"aliases": aliases})
