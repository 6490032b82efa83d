"""Rooms: building, authorizing and persisting events; memberships; aliases.

DESIGN.md, "A message, end to end": under the room's lock an event is built
(prev_events = forward extremities, auth_events selected from the current
state), hashed and signed (``core/events.py``), authorized
(``core/auth_rules.py``), persisted with its state in one transaction
(``storage/events.py``), then the room's members are woken up.

Errors are :class:`~ranvier.errors.MatrixError`: 403 ``M_FORBIDDEN`` with
the auth rule's reason, 413 ``M_TOO_LARGE`` for events over 65536 bytes,
404 ``M_NOT_FOUND`` for unknown rooms.

Rooms on other servers (joins, invites of remote users) need federation,
which comes later: they are answered 404 with a message saying so.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ranvier.core.auth_rules import (
    CREATE_KEY,
    AuthError,
    auth_types_for_event,
    check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
    get_named_level,
    get_send_level,
    user_power_level,
)
from ranvier.core.canonical_json import CanonicalJSONError, encode_canonical_json
from ranvier.core.events import Event, StateKey, hash_and_sign_event
from ranvier.core.ids import InvalidIdentifier, RoomAlias, RoomID, UserID, is_mine, is_my_user_id
from ranvier.core.room_versions import RoomVersion, UnknownRoomVersion, get_room_version
from ranvier.errors import MatrixError
from ranvier.services.federation.client_joins import resolve_remote_alias
from ranvier.services.restricted_joins import restricted_join_authoriser
from ranvier.storage.events import EventStore, EventToPersist, NewRoom, TxnKey

# Re-exported: the stored event is what this service hands to its callers (the
# API layer types with it but does not import storage).
from ranvier.storage.events import StoredEvent as StoredEvent
from ranvier.storage.rooms import AliasInUse, RoomRecord, RoomStore
from ranvier.storage.state import StateStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.services.requester import Requester

#: Server-Server API, "Size limits": an event is at most 65536 bytes of
#: canonical JSON; type, state_key, sender, room_id, event_id at most 255 bytes.
MAX_EVENT_BYTES = 65536
MAX_ID_BYTES = 255
#: prev_events cap (Server-Server API, PDU schema: at most 20; Synapse uses 10).
MAX_PREV_EVENTS = 10

MEMBER = "m.room.member"
GUEST_ACCESS = "m.room.guest_access"
HISTORY_VISIBILITY_KEY: StateKey = ("m.room.history_visibility", "")


@dataclass
class _Head:
    """What building the next event of a room needs, held under the room's lock."""

    room_id: str
    version: RoomVersion
    extremities: list[tuple[str, int]]
    #: State events loaded so far, by key (all of them when ``complete``).
    state: dict[StateKey, Event] = field(default_factory=dict)
    complete: bool = False
    #: Keys looked up and found absent from the current state: checking a
    #: draft asks for the same auth keys building it did (a join's own member
    #: key is absent), so they are not looked up twice.
    absent: set[StateKey] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An event to build: what a client asks for."""

    type: str
    content: Mapping[str, Any]
    state_key: str | None = None
    #: Extra top-level keys of the PDU (``redacts`` before room version 11).
    extra: Mapping[str, Any] = field(default_factory=dict)


class RoomsService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.server_name = hs.server_name
        self.state_store = StateStore(hs.database)
        self.store = RoomStore(hs.database)
        self.events = EventStore(hs.database, self.state_store, self.store)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._last_creation_ts = 0

    def creation_ts(self) -> int:
        """The timestamp of a new room's events: now, or one ms after the last
        room this process created when that was in the same millisecond (a v12
        room ID is the create event's hash, which includes it)."""
        ts = max(self.hs.clock_ms(), self._last_creation_ts + 1)
        self._last_creation_ts = ts
        return ts

    # --- interface for other areas (team brief) ------------------------------------------

    async def get_membership(self, room_id: str, user_id: str) -> str | None:
        membership = await self.store.get_membership(room_id, user_id)
        return None if membership is None else membership.membership

    async def joined_user_ids(self, room_id: str) -> set[str]:
        return await self.store.joined_user_ids(room_id)

    async def joined_servers(self, room_id: str) -> Counter[str]:
        """The servers of the room's joined members, with their numbers (shared)."""
        return await self.store.joined_servers(room_id)

    async def joined_room_ids(self, user_id: str) -> list[str]:
        return await self.store.joined_room_ids(user_id)

    async def users_sharing_rooms_with(self, user_id: str) -> set[str]:
        return await self.store.users_sharing_rooms_with(user_id)

    async def room_exists(self, room_id: str) -> bool:
        return await self.store.get_room(room_id) is not None

    async def on_profile_changed(self, user_id: str) -> None:
        """Send an updated join event into every room ``user_id`` is joined to."""
        profile = await self.hs.profiles.get_profile(user_id)
        for room_id in await self.store.joined_room_ids(user_id):
            member_id = (await self.events.current_state_ids(room_id, [(MEMBER, user_id)])).get(
                (MEMBER, user_id)
            )
            current = await self.events.get_event(member_id) if member_id else None
            content = dict(current.event.content) if current is not None else {"membership": "join"}
            for key in ("displayname", "avatar_url"):
                content.pop(key, None)
                if isinstance(profile.get(key), str):
                    content[key] = profile[key]
            if current is not None and content == dict(current.event.content):
                continue
            try:
                await self.send_event(user_id, room_id, EventSpec(MEMBER, content, user_id))
            except MatrixError:
                continue  # e.g. no longer allowed to change the member event; skip that room

    async def on_user_deactivated(self, user_id: str) -> None:
        """A deactivated account leaves every room it is joined to, invited to or
        knocking on (as Synapse does; Client-Server API "Account deactivation":
        the server should make the user leave all rooms)."""
        for membership in await self.store.rooms_for_user(user_id, ("join", "invite", "knock")):
            try:
                await self.update_membership(user_id, membership.room_id, user_id, "leave")
            except MatrixError:
                continue  # a room the user may no longer leave by itself; nothing more to do

    # --- locks and room lookup -------------------------------------------------------------

    def room_lock(self, room_id: str) -> asyncio.Lock:
        """The lock serialising event creation in a room (one process)."""
        lock = self._locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room_id] = lock
        return lock

    async def require_room(self, room_id: str) -> RoomRecord:
        room = await self.store.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        return room

    def is_local_user(self, user_id: str) -> bool:
        return is_my_user_id(user_id, self.server_name)

    async def resolve_room_id_or_alias(self, room_id_or_alias: str) -> str:
        """A room ID for ``!room`` or ``#alias``; unknown → 404 M_NOT_FOUND."""
        if room_id_or_alias.startswith("#"):
            try:
                RoomAlias.parse(room_id_or_alias)
            except InvalidIdentifier as exc:
                raise MatrixError(400, "M_INVALID_PARAM", str(exc)) from None
            if not is_mine(room_id_or_alias, self.server_name):
                room_id, _ = await resolve_remote_alias(self.hs, room_id_or_alias)
                return room_id
            found = await self.store.get_alias(room_id_or_alias)
            if found is None:
                raise MatrixError(404, "M_NOT_FOUND", f"Room alias {room_id_or_alias} not found")
            return found[0]
        if not RoomID.is_valid(room_id_or_alias):
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a room ID or alias: {room_id_or_alias}")
        return room_id_or_alias

    async def require_local_room(self, room_id: str) -> RoomRecord:
        """The room, or 404 explaining that rooms of other servers need federation."""
        room = await self.store.get_room(room_id)
        if room is not None:
            return room
        if not RoomID.is_valid(room_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a room ID: {room_id}")
        raise MatrixError(
            404,
            "M_NOT_FOUND",
            f"Unknown room {room_id}: this server is not in it, and joining rooms over "
            "federation is not available yet",
        )

    # --- building and sending events ------------------------------------------------------

    async def load_head(self, room: RoomRecord) -> _Head:
        """What building the room's next event needs; hold the room's lock."""
        return await self._load_head(room)

    async def _load_head(self, room: RoomRecord) -> _Head:
        version = get_room_version(room.room_version)
        extremities = await self.events.forward_extremities(room.room_id)
        return _Head(room.room_id, version, extremities)

    async def _head_state(self, head: _Head, keys: Iterable[StateKey]) -> dict[StateKey, Event]:
        wanted = set(keys)
        missing = [key for key in wanted if key not in head.state and key not in head.absent]
        if missing and not head.complete:
            ids = await self.events.current_state_ids(head.room_id, missing)
            loaded = await self.events.get_events(ids.values())
            for key, event_id in ids.items():
                if event_id in loaded:
                    head.state[key] = loaded[event_id].event
            head.absent.update(key for key in missing if key not in head.state)
        return {key: head.state[key] for key in wanted if key in head.state}

    async def draft_event(
        self, head: _Head, sender: str, spec: EventSpec, *, now_ms: int | None = None
    ) -> dict[str, Any]:
        """The next event of ``head`` as an unsigned PDU with its prev and auth
        events (also the template a resident server answers make_join with)."""
        version = head.version
        prev = head.extremities[:MAX_PREV_EVENTS]
        depth = max((d for _, d in prev), default=0) + 1
        pdu: dict[str, Any] = {
            "type": spec.type,
            "sender": sender,
            "content": dict(spec.content),
            "origin_server_ts": self.hs.clock_ms() if now_ms is None else now_ms,
            "depth": depth,
            "prev_events": [self._reference(version, event_id) for event_id, _ in prev],
            "auth_events": [],
            **spec.extra,
        }
        if spec.state_key is not None:
            pdu["state_key"] = spec.state_key
        is_create = spec.type == "m.room.create" and spec.state_key == ""
        if not (is_create and version.room_id_from_create_event):
            pdu["room_id"] = head.room_id
        if version.event_ids_in_pdu:
            pdu["event_id"] = new_event_id(self.server_name)
        for name, value in (("type", spec.type), ("state_key", spec.state_key), ("sender", sender)):
            if value is not None and len(value.encode("utf-8")) > MAX_ID_BYTES:
                raise MatrixError(413, "M_TOO_LARGE", f"{name} is longer than 255 bytes")

        provisional = Event.from_pdu(version, pdu, event_id="$provisional")
        auth_keys = auth_types_for_event(provisional)
        auth_state = await self._head_state(head, auth_keys | {CREATE_KEY})
        pdu["auth_events"] = [
            self._reference(version, auth_state[key].event_id)
            for key in sorted(auth_keys)
            if key in auth_state
        ]
        return pdu

    async def check_draft(self, head: _Head, event: Event) -> None:
        """403 unless ``event`` passes the auth rules against ``head``'s state."""
        auth_state = await self._head_state(head, auth_types_for_event(event) | {CREATE_KEY})
        try:
            check_state_independent_auth_rules(event, list(auth_state.values()))
            check_state_dependent_auth_rules(event, auth_state)
        except AuthError as exc:
            raise MatrixError(403, "M_FORBIDDEN", str(exc)) from None

    async def _build_event(
        self, head: _Head, sender: str, spec: EventSpec, *, now_ms: int | None = None
    ) -> Event:
        """Build, hash, sign and authorize the next event of ``head``; advance ``head``."""
        version = head.version
        pdu = await self.draft_event(head, sender, spec, now_ms=now_ms)
        try:
            signed = hash_and_sign_event(version, pdu, self.server_name, self.hs.signing_key)
            size = len(encode_canonical_json(signed))
        except CanonicalJSONError as exc:
            raise MatrixError(400, "M_BAD_JSON", f"Event content is not valid: {exc}") from None
        if size > MAX_EVENT_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", f"Event is {size} bytes, over {MAX_EVENT_BYTES}")
        event = Event.from_pdu(version, signed)
        if (
            spec.type == "m.room.create"
            and spec.state_key == ""
            and version.room_id_from_create_event
        ):
            head.room_id = event.room_id
        await self.check_draft(head, event)
        head.extremities = [(event.event_id, pdu["depth"])]
        if event.is_state():
            head.state[event.state_tuple] = event
            head.absent.discard(event.state_tuple)
        return event

    @staticmethod
    def _reference(version: RoomVersion, event_id: str) -> Any:
        # v1–v2 reference events as [event_id, hashes] pairs; the hashes are
        # informational only and left empty.
        return [event_id, {}] if version.event_ids_in_pdu else event_id

    async def send_event(
        self,
        sender: str,
        room_id: str,
        spec: EventSpec,
        *,
        txn: TxnKey | None = None,
        before_persist: Callable[[Event], Awaitable[Event]] | None = None,
    ) -> StoredEvent:
        """Build, authorize and persist one event; idempotent per ``txn`` key.
        ``before_persist`` may replace the built event (an invite counter-signed
        by the invitee's server) or refuse it by raising."""
        room = await self.require_room(room_id)
        async with self.room_lock(room_id):
            if txn is not None:
                existing = await self.events.get_txn_event_id(txn)
                if existing is not None:
                    stored = await self.events.get_event(existing)
                    if stored is not None:
                        return stored
            head = await self._load_head(room)
            event = await self._build_event(head, sender, spec)
            if before_persist is not None:
                event = await before_persist(event)
            [stored] = await self.events.persist_local_events(room_id, [EventToPersist(event, txn)])
        await self._after_local_events([stored])
        return stored

    async def persist_new_room(
        self, head: _Head, events: Sequence[Event], room: NewRoom
    ) -> list[StoredEvent]:
        stored = await self.events.persist_local_events(
            head.room_id, [EventToPersist(e) for e in events], new_room=room
        )
        await self._after_local_events(stored)
        return stored

    async def _after_local_events(self, stored: Sequence[StoredEvent]) -> None:
        """Wake the room's syncing members and queue the events for other servers."""
        for item in stored:
            await self._notify(item.event, item.stream_ordering)
        if self.hs.federation_sender is not None:
            await self.hs.federation_sender.on_local_events(stored)

    async def notify_event(self, event: Event) -> None:
        """Wake whoever syncs the room of ``event`` (also for events from other servers)."""
        await self._notify(event)

    async def _notify(self, event: Event, position: int | None = None) -> None:
        users = await self.store.joined_user_ids(event.room_id)
        if event.type == MEMBER and event.state_key is not None:
            users.add(event.state_key)
        push = getattr(self.hs, "push", None)
        if push is not None:
            if position is None:
                stored = await self.events.get_event(event.event_id)
                position = stored.stream_ordering if stored is not None else None
            # Push rules and counts, off the request path; the members are
            # woken once the event's counts are stored (services/push.py).
            if push.on_event(event, position, users):
                return
        self.hs.notifier.notify_users(users)
        self.hs.notifier.notify_room(event.room_id)

    # --- state events -------------------------------------------------------------------

    async def send_state_event(
        self, sender: str, room_id: str, event_type: str, state_key: str, content: dict[str, Any]
    ) -> str:
        """PUT /rooms/{roomId}/state/{eventType}/{stateKey}: the event ID.

        Setting the same content again returns the existing event (as Synapse does).
        """
        await self.require_room(room_id)
        if event_type == "m.room.canonical_alias":
            await self._check_canonical_alias(room_id, content)
        current_id = (await self.events.current_state_ids(room_id, [(event_type, state_key)])).get(
            (event_type, state_key)
        )
        if current_id is not None:
            current = await self.events.get_event(current_id)
            if (
                current is not None
                and current.redacted_by is None
                and current.event.sender == sender
                and dict(current.event.content) == content
            ):
                return current_id
        stored = await self.send_event(sender, room_id, EventSpec(event_type, content, state_key))
        if (
            event_type == GUEST_ACCESS
            and state_key == ""
            and content.get("guest_access") != "can_join"
        ):
            await self._remove_guests(room_id)
        return stored.event_id

    async def _remove_guests(self, room_id: str) -> None:
        """Client-Server API, "Guest Access", Server behaviour: once guests may no
        longer join, "the server MUST set those users' m.room.member state to
        leave". As Synapse, each joined guest leaves by itself."""
        for user_id in sorted(await self.store.joined_user_ids(room_id)):
            if not self.is_local_user(user_id):
                continue
            user = await self.hs.accounts.get_user(user_id)
            if user is None or not user.is_guest:
                continue
            try:
                await self.update_membership(user_id, room_id, user_id, "leave")
            except MatrixError:
                continue  # e.g. already gone; nothing more to do

    async def _check_canonical_alias(self, room_id: str, content: Mapping[str, Any]) -> None:
        """m.room.canonical_alias: new aliases must be valid and point to this room."""
        previous = await self.events.current_state_ids(room_id, [("m.room.canonical_alias", "")])
        old: set[str] = set()
        old_id = previous.get(("m.room.canonical_alias", ""))
        if old_id is not None:
            old_event = await self.events.get_event(old_id)
            if old_event is not None:
                old = _canonical_aliases(old_event.event.content)
        alias = content.get("alias")
        alt = content.get("alt_aliases")
        if alias is not None and not isinstance(alias, str):
            raise MatrixError(400, "M_INVALID_PARAM", "alias must be a string")
        if alt is not None and not (isinstance(alt, list) and all(isinstance(a, str) for a in alt)):
            raise MatrixError(400, "M_INVALID_PARAM", "alt_aliases must be a list of strings")
        for candidate in _canonical_aliases(content) - old:
            try:
                RoomAlias.parse(candidate)
            except InvalidIdentifier:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid alias {candidate!r}") from None
            if not is_mine(candidate, self.server_name):
                raise MatrixError(
                    400, "M_BAD_ALIAS", f"Cannot check alias {candidate} on another server"
                )
            target = await self.store.get_alias(candidate)
            if target is None or target[0] != room_id:
                raise MatrixError(
                    400, "M_BAD_ALIAS", f"Alias {candidate} does not point to this room"
                )

    # --- memberships ---------------------------------------------------------------------

    async def update_membership(
        self,
        sender: str,
        room_id: str,
        target: str,
        membership: str,
        *,
        reason: str | None = None,
        extra_content: Mapping[str, Any] | None = None,
    ) -> StoredEvent | None:
        """Send ``target``'s m.room.member event; None when nothing changes."""
        await self.require_local_room(room_id)
        if membership in ("invite", "ban", "join", "knock", "leave") and not _valid_user_id(target):
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a user ID: {target!r}")
        current = await self.store.get_membership(room_id, target)
        current_membership = None if current is None else current.membership
        if membership == "join" and current_membership == "join" and sender == target:
            return None  # already joined: nothing to do (Synapse re-sends only on change)
        if (
            membership == "leave"
            and sender == target
            and current is not None
            and current_membership in ("invite", "knock")
            and await self._held_without_state(current.event_id)
        ):
            # An invite or knock of a room this server is not in: rejected
            # through the other server (Server-Server API, "Leaving Rooms").
            return await self.hs.federation_memberships.reject_remote_invite(target, room_id)
        if membership == "leave" and sender == target and current_membership in (None, "leave"):
            if current_membership is None:
                raise MatrixError(403, "M_FORBIDDEN", f"{target} is not in room {room_id}")
            return None
        before_persist = None
        if membership == "invite":
            await self._check_invitee(target)
            if not self.is_local_user(target):
                # Server-Server API, "Inviting to a room": the invitee's server
                # signs the invite before it is persisted.
                before_persist = self.hs.federation_invites.send_invite
        content: dict[str, Any] = {"membership": membership}
        if membership in ("join", "invite", "knock"):
            profile = await self.hs.profiles.get_profile_or_empty(target)
            for key in ("displayname", "avatar_url"):
                if isinstance(profile.get(key), str):
                    content[key] = profile[key]
        if extra_content:
            content.update(extra_content)
        if reason is not None:
            content["reason"] = reason
        return await self.send_event(
            sender, room_id, EventSpec(MEMBER, content, target), before_persist=before_persist
        )

    async def _held_without_state(self, event_id: str) -> bool:
        """Whether the event is an outlier: we hold it, not the room's state at it."""
        stored = await self.events.get_event(event_id)
        return stored is not None and stored.outlier

    async def _check_invitee(self, target: str) -> None:
        if not self.is_local_user(target):
            return  # its server says whether the user exists (services/federation/invites.py)
        if not await self.hs.accounts.user_exists(target):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown user {target}")

    async def join(
        self, user_id: str, room_id: str, *, reason: str | None = None, is_guest: bool = False
    ) -> str:
        await self.require_local_room(room_id)
        servers = await self.hs.federation_memberships.servers_for_pending_membership(
            user_id, room_id
        )
        if servers is not None:
            # Accepting an invite to a room this server is not in (Server-Server
            # API, "Joining Rooms"), through the inviting server.
            return await self._join_remote(user_id, room_id, servers)
        if is_guest:
            await self._check_guest_access(room_id)
        # Restricted rooms (Client-Server API, "Restricted rooms"): a local join
        # through membership of an allowed room names one of our users who may
        # invite, as a remote join's make_join does (the same helper).
        authoriser = await restricted_join_authoriser(self.hs, room_id, user_id)
        extra = None if authoriser is None else {"join_authorised_via_users_server": authoriser}
        await self.update_membership(
            user_id, room_id, user_id, "join", reason=reason, extra_content=extra
        )
        return room_id

    async def _join_remote(self, user_id: str, room_id: str, servers: list[str]) -> str:
        joins = getattr(self.hs, "federation_joins", None)
        if joins is None:
            raise MatrixError(
                404, "M_NOT_FOUND", f"This server is not in room {room_id} and cannot join it"
            )
        result: str = await joins.join_remote_room(user_id, room_id, servers)
        return result

    async def _check_guest_access(self, room_id: str) -> None:
        ids = await self.events.current_state_ids(room_id, [("m.room.guest_access", "")])
        event_id = ids.get(("m.room.guest_access", ""))
        stored = await self.events.get_event(event_id) if event_id else None
        if stored is None or stored.event.content.get("guest_access") != "can_join":
            raise MatrixError(403, "M_FORBIDDEN", "Guest access is not allowed in this room")

    async def forget(self, user_id: str, room_id: str) -> None:
        membership = await self.store.get_membership(room_id, user_id)
        if membership is None:
            await self.require_room(room_id)
            return  # never in the room: nothing to forget (Synapse answers 200 too)
        if membership.membership in ("join", "invite", "knock"):
            raise MatrixError(
                400, "M_UNKNOWN", f"User {user_id} is in room {room_id}; leave it before forgetting"
            )
        await self.store.forget(room_id, user_id)

    # --- client sends with transaction IDs -----------------------------------------------

    @staticmethod
    def txn_key(requester: Requester, scope: str, txn_id: str) -> TxnKey:
        # Client-Server API, "Transaction identifiers": scoped to one device and
        # one endpoint (here, as Synapse, the request path without the txn id).
        return (requester.user_id, requester.device_id or "", scope, txn_id)

    async def _earlier_txn_event_id(self, requester: Requester, key: TxnKey) -> str | None:
        """The event a retried request already sent, or None after the message
        rate limit (a retry is not a new message, so it is never rate limited)."""
        existing = await self.events.get_txn_event_id(key)
        if existing is None:
            self.hs.ratelimiter.check("message", requester.user_id)
        return existing

    async def send_client_event(
        self, requester: Requester, room_id: str, spec: EventSpec, txn_id: str
    ) -> str:
        """``PUT /rooms/{roomId}/send/{eventType}/{txnId}``: the event ID, the
        same one for every retry of the transaction."""
        key = self.txn_key(requester, f"send/{room_id}/{spec.type}", txn_id)
        existing = await self._earlier_txn_event_id(requester, key)
        if existing is not None:
            return existing
        await self.hs.relations.check_new_relation(
            requester.user_id, room_id, spec.type, spec.content
        )
        stored = await self.send_event(requester.user_id, room_id, spec, txn=key)
        return stored.event_id

    async def redact_client_event(
        self, requester: Requester, room_id: str, event_id: str, reason: str | None, txn_id: str
    ) -> str:
        """``PUT /rooms/{roomId}/redact/{eventId}/{txnId}``: the redaction's
        event ID, the same one for every retry of the transaction."""
        key = self.txn_key(requester, f"redact/{room_id}/{event_id}", txn_id)
        existing = await self._earlier_txn_event_id(requester, key)
        if existing is not None:
            return existing
        return await self.redact(requester.user_id, room_id, event_id, reason=reason, txn=key)

    # --- redactions ----------------------------------------------------------------------

    async def redact(
        self,
        sender: str,
        room_id: str,
        event_id: str,
        *,
        reason: str | None,
        txn: TxnKey | None,
    ) -> str:
        """Redact ``event_id`` (Client-Server API, "Redactions")."""
        room = await self.require_room(room_id)
        if txn is not None:
            existing = await self.events.get_txn_event_id(txn)
            if existing is not None:
                return existing
        version = get_room_version(room.room_version)
        target = await self.events.get_event(event_id)
        if target is None or target.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", f"Event {event_id} not found in {room_id}")
        # Fragment v3-handling-redactions: allowed for the event's own sender, or
        # with the redact power level. Checked here because the auth rules of
        # room versions 3+ no longer check it.
        if target.event.sender != sender:
            state = await self._state_events(room_id, [CREATE_KEY, ("m.room.power_levels", "")])
            if user_power_level(state, sender) < get_named_level(state, "redact"):
                raise MatrixError(403, "M_FORBIDDEN", "You may not redact other users' events")
        content: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if reason is not None:
            content["reason"] = reason
        if version.redacts_in_content:
            content["redacts"] = event_id  # v11+ (MSC2174)
        else:
            extra["redacts"] = event_id
        stored = await self.send_event(
            sender, room_id, EventSpec("m.room.redaction", content, None, extra), txn=txn
        )
        return stored.event_id

    async def _state_events(self, room_id: str, keys: Iterable[StateKey]) -> dict[StateKey, Event]:
        ids = await self.events.current_state_ids(room_id, keys)
        loaded = await self.events.get_events(ids.values())
        return {key: loaded[eid].event for key, eid in ids.items() if eid in loaded}

    # --- aliases -------------------------------------------------------------------------

    def parse_local_alias(self, alias: str) -> RoomAlias:
        try:
            parsed = RoomAlias.parse(alias)
        except InvalidIdentifier as exc:
            raise MatrixError(400, "M_INVALID_PARAM", str(exc)) from None
        if len(alias.encode("utf-8")) > MAX_ID_BYTES:
            raise MatrixError(400, "M_INVALID_PARAM", "Room alias is longer than 255 bytes")
        return parsed

    async def create_alias(self, user_id: str, alias: str, room_id: str) -> None:
        self.parse_local_alias(alias)
        if not is_mine(alias, self.server_name):
            raise MatrixError(400, "M_INVALID_PARAM", "Room alias must be on this server")
        await self.require_room(room_id)
        try:
            await self.store.create_alias(alias, room_id, user_id)
        except AliasInUse:
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists") from None

    async def get_alias(self, alias: str) -> str:
        self.parse_local_alias(alias)
        if not is_mine(alias, self.server_name):
            raise MatrixError(
                404,
                "M_NOT_FOUND",
                f"Alias {alias} is on another server; federation is not available yet",
            )
        found = await self.store.get_alias(alias)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        return found[0]

    async def _may_manage_aliases(self, user_id: str, room_id: str) -> bool:
        """Joined with the power to send m.room.canonical_alias, or a server admin
        (Synapse's rule for deleting others' aliases and the directory flag)."""
        if await self.hs.accounts.is_admin(user_id):
            return True
        state = await self._state_events(
            room_id, [CREATE_KEY, ("m.room.power_levels", ""), (MEMBER, user_id)]
        )
        member = state.get((MEMBER, user_id))
        return (
            member is not None
            and member.membership == "join"
            and user_power_level(state, user_id)
            >= get_send_level(state, "m.room.canonical_alias", True)
        )

    async def delete_alias(self, user_id: str, alias: str) -> None:
        """The alias's creator or a room admin may delete it."""
        self.parse_local_alias(alias)
        found = await self.store.get_alias(alias)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        room_id, creator = found
        if creator != user_id and not await self._may_manage_aliases(user_id, room_id):
            raise MatrixError(403, "M_FORBIDDEN", "You may not delete this alias")
        await self.store.delete_alias(alias)

    async def set_directory_visibility(self, user_id: str, room_id: str, public: bool) -> None:
        await self.require_room(room_id)
        if not await self._may_manage_aliases(user_id, room_id):
            raise MatrixError(
                403, "M_FORBIDDEN", "You may not change this room's directory visibility"
            )
        await self.store.set_room_is_public(room_id, public)

    async def local_aliases(self, user_id: str, room_id: str) -> list[str]:
        await self.require_room(room_id)
        if not await self.user_can_see_room_state(user_id, room_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
        return await self.store.aliases_for_room(room_id)

    # --- reading ------------------------------------------------------------------------

    async def history_visibility(self, room_id: str) -> str:
        state = await self._state_events(room_id, [HISTORY_VISIBILITY_KEY])
        event = state.get(HISTORY_VISIBILITY_KEY)
        value = event.content.get("history_visibility") if event is not None else None
        return value if isinstance(value, str) else "shared"

    async def user_can_see_room_state(self, user_id: str, room_id: str) -> bool:
        membership = await self.get_membership(room_id, user_id)
        return membership == "join" or await self.history_visibility(room_id) == "world_readable"

    async def visible_state_group(self, user_id: str, room_id: str) -> int:
        """The state group whose state ``user_id`` may read (GET /state, /members).

        Joined (or world_readable room): the current state. Left or banned:
        the state when they left. Otherwise 403 M_FORBIDDEN.
        """
        await self.require_room(room_id)
        membership = await self.store.get_membership(room_id, user_id)
        current = await self.events.current_state_group(room_id)
        assert current is not None
        if membership is not None and membership.membership == "join":
            return current
        if await self.history_visibility(room_id) == "world_readable":
            return current
        if membership is not None and membership.membership in ("leave", "ban"):
            stored = await self.events.get_event(membership.event_id)
            if stored is not None and stored.state_group is not None:
                return stored.state_group
        raise MatrixError(
            403, "M_FORBIDDEN", f"User {user_id} is not in room {room_id} and never was"
        )


def _canonical_aliases(content: Mapping[str, Any]) -> set[str]:
    aliases: set[str] = set()
    if isinstance(content.get("alias"), str):
        aliases.add(content["alias"])
    alt = content.get("alt_aliases")
    if isinstance(alt, list):
        aliases.update(a for a in alt if isinstance(a, str))
    return aliases


def _valid_user_id(value: str) -> bool:
    return isinstance(value, str) and UserID.is_valid(value) and len(value.encode()) <= 255


_ALPHABET = string.ascii_letters


def _random_string(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_room_id(server_name: str) -> str:
    """A room ID for room versions 1–11: ``!opaque:server``."""
    return f"!{_random_string(18)}:{server_name}"


def new_event_id(server_name: str) -> str:
    """An event ID for room versions 1–2: ``$opaque:server``, of the server that
    makes (and signs) the event."""
    return f"${_random_string(18)}:{server_name}"


def parse_room_version(identifier: object) -> RoomVersion:
    if not isinstance(identifier, str):
        raise MatrixError(400, "M_BAD_JSON", "room_version must be a string")
    try:
        return get_room_version(identifier)
    except UnknownRoomVersion:
        raise MatrixError(
            400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {identifier!r}"
        ) from None
