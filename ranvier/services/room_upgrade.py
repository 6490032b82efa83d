"""Room upgrades: ``POST /rooms/{roomId}/upgrade`` (Client-Server API v1.19,
"Room Upgrades", Server behaviour; room_upgrades.yaml; MSC4289 for v12).

The replacement room is built like a createRoom: every event is built and
authorized in memory, then the room and all its first events are written in
one transaction. Then, in the spec's order: local aliases move, the tombstone
goes into the old room, and the old room's power levels are raised so only
moderators may still speak or invite. Bans carry over too (as Synapse), and
a user's own settings for the old room follow them when they join the new
one (room_upgrade_settings.py).

Upgrades of one room run one at a time (a lock per old room). A retry of an
upgrade that already happened (the same user, version and creators) answers
the room that upgrade made instead of making a second one, as Synapse's
response cache does. The lock is per process: several processes sharing one
PostgreSQL could still race two upgrades of the same room.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ranvier.core.auth_rules import CREATE_KEY, is_valid_user_id, parse_power_level
from ranvier.core.events import Event, StateKey
from ranvier.core.room_versions import RoomVersion
from ranvier.errors import MatrixError
from ranvier.services.room_creation import _default_power_levels
from ranvier.services.room_upgrade_settings import predecessor_of, transfer_user_settings
from ranvier.services.rooms import MEMBER, EventSpec, _Head, new_room_id, parse_room_version
from ranvier.storage.events import NewRoom, RoomExists

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.services.requester import Requester
    from ranvier.services.rooms import RoomsService
    from ranvier.storage.rooms import RoomRecord

POWER_LEVELS = "m.room.power_levels"
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
TOMBSTONE = "m.room.tombstone"
CANONICAL_ALIAS = "m.room.canonical_alias"
SPACE_CHILD = "m.space.child"

#: "Room Upgrades", Server behaviour, step 3: the recommended state to transfer
#: (power levels are handled apart). Order: access rules first, then the rest.
TRANSFERRED_STATE: tuple[str, ...] = (
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)
#: Keys of m.room.create content the new room inherits besides ``type``
#: (step 2); ``m.federate`` too, as Synapse: an unfederated room stays so.
INHERITED_CREATE_KEYS: tuple[str, ...] = ("type", "m.federate")
#: m.room.power_levels properties holding one level.
NAMED_LEVELS: tuple[str, ...] = (
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
)
#: MSC4289: in v12 the tombstone level must be above state_default; 150 is
#: what createRoom gives new v12 rooms.
V12_TOMBSTONE_LEVEL = 150
MAX_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    version: RoomVersion
    #: v12+ only (MSC4289): the new room's additional creators, the upgrader excluded.
    additional_creators: tuple[str, ...]


def parse_upgrade_request(body: Mapping[str, Any], upgrader: str) -> UpgradeRequest:
    """The request body; 400 M_BAD_JSON / M_UNSUPPORTED_ROOM_VERSION."""
    if "new_version" not in body:
        raise MatrixError(400, "M_BAD_JSON", "new_version is required")
    version = parse_room_version(body["new_version"])
    if not version.creators_have_infinite_power:
        # room_upgrades.yaml: "this field is ignored" for such versions.
        return UpgradeRequest(version, ())
    extra = body.get("additional_creators", [])
    if extra is None:
        extra = []
    if not isinstance(extra, list) or not all(isinstance(user, str) for user in extra):
        raise MatrixError(400, "M_BAD_JSON", "additional_creators must be a list of user IDs")
    for user in extra:
        if not is_valid_user_id(user):
            raise MatrixError(
                400, "M_INVALID_PARAM", f"Not a user ID in additional_creators: {user!r}"
            )
    creators = tuple(user for user in dict.fromkeys(extra) if user != upgrader)
    return UpgradeRequest(version, creators)


class RoomUpgradeService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def rooms(self) -> RoomsService:
        return self.hs.rooms

    def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room_id] = lock
        return lock

    async def upgrade(self, requester: Requester, room_id: str, body: Mapping[str, Any]) -> str:
        """Upgrade ``room_id``; the replacement room's ID."""
        user_id = requester.user_id
        request = parse_upgrade_request(body, user_id)
        old_room = await self.rooms.require_room(room_id)
        async with self._lock(room_id):
            if await self.rooms.get_membership(room_id, user_id) != "join":
                raise MatrixError(403, "M_FORBIDDEN", f"You are not joined to room {room_id}")
            # Step 1: the user must be allowed to send the tombstone.
            await self._check_tombstone_power(old_room, user_id)
            earlier = await self._earlier_upgrade(room_id, user_id, request)
            if earlier is not None:
                return earlier
            state = await self._transferable_state(room_id)
            aliases = await self.rooms.store.aliases_for_room(room_id)
            new_room_id = await self._create_replacement(old_room, user_id, request, state, aliases)
            await self._move_aliases(user_id, old_room, new_room_id, state, aliases)
            await self.rooms.send_event(
                user_id,
                room_id,
                EventSpec(
                    TOMBSTONE,
                    {"body": "This room has been replaced", "replacement_room": new_room_id},
                    "",
                ),
            )
            await self._restrict_old_room(room_id, user_id)
            # The upgrader joined the new room by creating it.
            await transfer_user_settings(self.hs, user_id, room_id, new_room_id)
            return new_room_id

    async def on_joined(self, user_id: str, room_id: str) -> None:
        """After a local user joins ``room_id``: if it replaces another room,
        the user's settings for that room follow (room_upgrade_settings.py)."""
        old_room_id = await predecessor_of(self.hs, room_id)
        if old_room_id is not None:
            await transfer_user_settings(self.hs, user_id, old_room_id, room_id)

    # --- checks ------------------------------------------------------------------------

    async def _check_tombstone_power(self, old_room: RoomRecord, user_id: str) -> None:
        """403 unless a tombstone from ``user_id`` would pass the auth rules now
        (a draft, built and checked, never stored)."""
        async with self.rooms.room_lock(old_room.room_id):
            head = await self.rooms.load_head(old_room)
            spec = EventSpec(TOMBSTONE, {"body": "", "replacement_room": old_room.room_id}, "")
            await self.rooms._build_event(head, user_id, spec)

    async def _earlier_upgrade(
        self, room_id: str, user_id: str, request: UpgradeRequest
    ) -> str | None:
        """The replacement room of an upgrade this request repeats, if any: the
        old room's tombstone is the user's, and points to a room of the asked
        version, with the asked creators, that names this room its predecessor."""
        tombstone = (await self._state_events(room_id, [(TOMBSTONE, "")])).get((TOMBSTONE, ""))
        if tombstone is None or tombstone.sender != user_id:
            return None
        replacement = tombstone.content.get("replacement_room")
        if not isinstance(replacement, str) or not await self.rooms.room_exists(replacement):
            return None
        create = (await self._state_events(replacement, [CREATE_KEY])).get(CREATE_KEY)
        if create is None:
            return None
        predecessor = create.content.get("predecessor")
        if not isinstance(predecessor, dict) or predecessor.get("room_id") != room_id:
            return None
        if create.content.get("room_version") != request.version.identifier:
            return None
        creators = tuple(create.content.get("additional_creators", ()))
        if request.version.creators_have_infinite_power and creators != request.additional_creators:
            return None
        return replacement

    # --- the replacement room -------------------------------------------------------------

    async def _transferable_state(self, room_id: str) -> dict[StateKey, Event]:
        """The old room's state the upgrade reads: the create event, power levels,
        canonical alias, the transferred types, space children and bans."""
        ids = await self.rooms.events.current_state_ids(room_id)
        wanted_types = {
            "m.room.create",
            POWER_LEVELS,
            CANONICAL_ALIAS,
            *TRANSFERRED_STATE,
        }
        keys = [
            key
            for key in ids
            if (key[0] in wanted_types and key[1] == "") or key[0] in (SPACE_CHILD, MEMBER)
        ]
        banned = {m.user_id for m in await self.rooms.store.members(room_id, ["ban"])}
        keys = [key for key in keys if key[0] != MEMBER or key[1] in banned]
        return await self._state_events(room_id, keys)

    async def _state_events(self, room_id: str, keys: Iterable[StateKey]) -> dict[StateKey, Event]:
        return await self.rooms._state_events(room_id, keys)

    async def _create_replacement(
        self,
        old_room: RoomRecord,
        user_id: str,
        request: UpgradeRequest,
        state: Mapping[StateKey, Event],
        aliases: list[str],
    ) -> str:
        """Steps 2–3: the new room with its transferred state; its ID."""
        rooms = self.rooms
        version = request.version
        extremities = await rooms.events.forward_extremities(old_room.room_id)
        plan = _plan_new_room(old_room, user_id, request, state, aliases, extremities)
        now = rooms.creation_ts()
        for attempt in range(MAX_ATTEMPTS):
            head = _Head(
                room_id="" if version.room_id_from_create_event else new_room_id(rooms.server_name),
                version=version,
                extremities=[],
                complete=True,
            )
            events = await self._build_events(head, user_id, plan, now + attempt)
            new_room = NewRoom(
                room_id=head.room_id,
                room_version=version.identifier,
                creator=user_id,
                # Published rooms stay published: the directory entry moves too.
                is_public=old_room.is_public,
                created_ts=now,
            )
            try:
                await rooms.persist_new_room(head, events, new_room)
            except RoomExists:
                continue
            return head.room_id
        raise MatrixError(500, "M_UNKNOWN", "Could not allocate a room ID")

    async def _build_events(
        self, head: _Head, user_id: str, plan: _Plan, now_ms: int
    ) -> list[Event]:
        """Build and authorize the planned events; optional ones that the auth
        rules refuse (a ban of someone as powerful as the upgrader) are left out."""
        rooms = self.rooms
        profile = await self.hs.profiles.get_profile_or_empty(user_id)
        join: dict[str, Any] = {"membership": "join"}
        for key in ("displayname", "avatar_url"):
            if isinstance(profile.get(key), str):
                join[key] = profile[key]
        required = [
            EventSpec("m.room.create", plan.create_content, ""),
            EventSpec(MEMBER, join, user_id),
            EventSpec(POWER_LEVELS, plan.initial_power_levels, ""),
        ]
        events = [await rooms._build_event(head, user_id, s, now_ms=now_ms) for s in required]
        for spec in plan.optional:
            try:
                events.append(await rooms._build_event(head, user_id, spec, now_ms=now_ms))
            except MatrixError:
                continue
        if plan.final_power_levels is not None:
            spec = EventSpec(POWER_LEVELS, plan.final_power_levels, "")
            events.append(await rooms._build_event(head, user_id, spec, now_ms=now_ms))
        return events

    # --- after the new room exists ----------------------------------------------------------

    async def _move_aliases(
        self,
        user_id: str,
        old_room: RoomRecord,
        new_room_id: str,
        state: Mapping[StateKey, Event],
        aliases: list[str],
    ) -> None:
        """Step 4: local aliases (and the directory listing) move to the new room;
        the old room's canonical alias is cleared, as Synapse does."""
        rooms = self.rooms
        if aliases:
            await rooms.store.move_aliases(old_room.room_id, new_room_id)
        if old_room.is_public:
            await rooms.store.set_room_is_public(old_room.room_id, False)
        canonical = state.get((CANONICAL_ALIAS, ""))
        if canonical is None or not canonical.content:
            return
        try:
            await rooms.send_event(user_id, old_room.room_id, EventSpec(CANONICAL_ALIAS, {}, ""))
        except MatrixError:
            return  # "if possible": the upgrader may lack the power; the aliases moved anyway

    async def _restrict_old_room(self, room_id: str, user_id: str) -> None:
        """Step 6: only moderators may still send or invite in the old room:
        ``events_default`` and ``invite`` become at least max(50, users_default + 1)."""
        power = (await self._state_events(room_id, [POWER_LEVELS_KEY])).get(POWER_LEVELS_KEY)
        if power is None:
            return  # as Synapse: a room without power levels is left as it is
        version = power.room_version
        content = dict(power.content)
        users_default = parse_power_level(version, content.get("users_default", 0))
        restricted = max(50, (users_default or 0) + 1)
        changed = False
        for name, default in (("events_default", 0), ("invite", 0)):
            level = parse_power_level(version, content.get(name, default))
            if level is None or level < restricted:
                content[name] = restricted
                changed = True
        if not changed:
            return
        try:
            await self.rooms.send_event(user_id, room_id, EventSpec(POWER_LEVELS, content, ""))
        except MatrixError:
            return  # "if possible": the upgrader may not change power levels


# --- planning the new room (pure) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    create_content: dict[str, Any]
    #: The power levels sent right after the upgrader's join.
    initial_power_levels: dict[str, Any]
    #: Transferred state, canonical alias and bans: left out if refused.
    optional: list[EventSpec]
    #: The transferred power levels, when the initial ones had to lift the
    #: upgrader high enough to send everything (before v12); else None.
    final_power_levels: dict[str, Any] | None


def _plan_new_room(
    old_room: RoomRecord,
    user_id: str,
    request: UpgradeRequest,
    state: Mapping[StateKey, Event],
    aliases: list[str],
    extremities: list[tuple[str, int]],
) -> _Plan:
    version = request.version
    old_create = state[CREATE_KEY]
    create_content = _create_content(old_room, old_create, user_id, request, extremities)
    creators = {user_id, *request.additional_creators}
    power = _transferred_power_levels(state.get(POWER_LEVELS_KEY), version, user_id, creators)
    optional = [
        EventSpec(event_type, dict(state[(event_type, "")].content), "")
        for event_type in TRANSFERRED_STATE
        if (event_type, "") in state
    ]
    if old_create.content.get("type") == "m.space":
        # Synapse also carries a space's children over (m.space.child events
        # with content; an empty one is a removed child).
        optional.extend(
            EventSpec(SPACE_CHILD, dict(event.content), key[1])
            for key, event in sorted(state.items())
            if key[0] == SPACE_CHILD and event.content
        )
    canonical = _moved_canonical_alias(state.get((CANONICAL_ALIAS, "")), aliases)
    if canonical:
        optional.append(EventSpec(CANONICAL_ALIAS, canonical, ""))
    # Bans carry over (as Synapse): a banned user stays out of the new room.
    # Creators cannot be banned in v12 (MSC4289), so they are skipped.
    bans = [
        EventSpec(MEMBER, _ban_content(event), key[1])
        for key, event in sorted(state.items())
        if key[0] == MEMBER and not (version.creators_have_infinite_power and key[1] in creators)
    ]
    optional.extend(bans)
    needed = _level_needed(power, [spec.type for spec in optional], bool(bans))
    if version.creators_have_infinite_power or _user_level(power, user_id) >= needed:
        return _Plan(create_content, power, optional, None)
    lifted = dict(power)
    lifted["users"] = {**power.get("users", {}), user_id: needed}
    return _Plan(create_content, lifted, optional, power)


def _create_content(
    old_room: RoomRecord,
    old_create: Event,
    user_id: str,
    request: UpgradeRequest,
    extremities: list[tuple[str, int]],
) -> dict[str, Any]:
    """Step 2: ``predecessor``, ``room_version``, the old ``type``; the creator
    field before v11 (MSC2175), ``additional_creators`` from v12 (MSC4289: not
    carried over from the old room, only what the request names)."""
    version = request.version
    content: dict[str, Any] = {
        key: old_create.content[key] for key in INHERITED_CREATE_KEYS if key in old_create.content
    }
    content["room_version"] = version.identifier
    predecessor: dict[str, Any] = {"room_id": old_room.room_id}
    if extremities:
        # m.room.create schema: "the event ID of the last known event in the
        # old room" (deprecated since v1.16, still populated where practical).
        predecessor["event_id"] = extremities[0][0]
    content["predecessor"] = predecessor
    if not version.implicit_room_creator:
        content["creator"] = user_id
    if request.additional_creators:
        content["additional_creators"] = list(request.additional_creators)
    return content


def _transferred_power_levels(
    old: Event | None, version: RoomVersion, user_id: str, creators: set[str]
) -> dict[str, Any]:
    """The old room's power levels in the new version's terms: every level an
    integer (v10+ accepts no strings, MSC3667), invalid entries dropped; in v12
    the creators left out of ``users`` and the tombstone above ``state_default``."""
    if old is None:
        return _default_power_levels(version, user_id, [])
    content = _integer_levels(old.room_version, old.content)
    if version.creators_have_infinite_power:
        users = content.get("users", {})
        content["users"] = {user: level for user, level in users.items() if user not in creators}
        state_default = content.get("state_default", 50)
        events = content.setdefault("events", {})
        if events.get(TOMBSTONE, state_default) <= state_default:
            events[TOMBSTONE] = max(V12_TOMBSTONE_LEVEL, state_default + 1)
    return content


def _integer_levels(old_version: RoomVersion, old: Mapping[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for key, value in old.items():
        if key in NAMED_LEVELS:
            level = parse_power_level(old_version, value)
            if level is not None:
                content[key] = level
        elif key in ("events", "notifications", "users"):
            if isinstance(value, dict):
                content[key] = {
                    name: level
                    for name, raw in value.items()
                    if (level := parse_power_level(old_version, raw)) is not None
                    and (key != "users" or is_valid_user_id(name))
                }
        else:
            content[key] = value
    return content


def _user_level(power: Mapping[str, Any], user_id: str) -> int:
    level: int = power.get("users", {}).get(user_id, power.get("users_default", 0))
    return level


def _send_level(power: Mapping[str, Any], event_type: str) -> int:
    """The level to send a state event of ``event_type`` (m.room.power_levels schema)."""
    level: int = power.get("events", {}).get(event_type, power.get("state_default", 50))
    return level


def _level_needed(power: Mapping[str, Any], state_types: list[str], bans: bool) -> int:
    """What the upgrader needs to send every planned event, the transferred
    power levels last (before v12 the room's creator is an ordinary user)."""
    needed = max(_send_level(power, t) for t in [POWER_LEVELS, *state_types])
    if bans:
        ban_level: int = power.get("ban", 50)
        needed = max(needed, ban_level)
    return needed


def _moved_canonical_alias(event: Event | None, aliases: list[str]) -> dict[str, Any]:
    """The old canonical alias content, keeping only the local aliases that move
    with the room (others' servers still point theirs at the old room)."""
    if event is None:
        return {}
    moving = set(aliases)
    content: dict[str, Any] = {}
    alias = event.content.get("alias")
    if isinstance(alias, str) and alias in moving:
        content["alias"] = alias
    alt = event.content.get("alt_aliases")
    if isinstance(alt, list):
        kept = [a for a in alt if isinstance(a, str) and a in moving]
        if kept:
            content["alt_aliases"] = kept
    return content


def _ban_content(event: Event) -> dict[str, Any]:
    content: dict[str, Any] = {"membership": "ban"}
    if isinstance(event.content.get("reason"), str):
        content["reason"] = event.content["reason"]
    return content
