"""POST /createRoom (Client-Server API, "Creation"; data/api/client-server/create_room.yaml).

The request is validated first, then every event is built and authorized in
memory in the order the spec prescribes, then the room, its alias and all
its events are written in one transaction: a createRoom that fails leaves
nothing behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.core.auth_rules import is_valid_user_id
from ranvier.core.ids import InvalidIdentifier, RoomAlias
from ranvier.core.room_versions import RoomVersion
from ranvier.errors import MatrixError
from ranvier.services.rooms import EventSpec, _Head, new_room_id, parse_room_version
from ranvier.storage.events import AliasTaken, NewRoom, RoomExists

if TYPE_CHECKING:
    from ranvier.services.requester import Requester
    from ranvier.services.rooms import RoomsService

PRESETS: dict[str, tuple[str, str, str]] = {
    # preset: (join_rule, history_visibility, guest_access) — createRoom's preset table.
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", "forbidden"),
}

def _optional(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    """``body[key]`` if present and of type ``kind``; absent or null → None; else 400."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be {what}")
    return value


def _default_power_levels(
    version: RoomVersion, creator: str, trusted_invitees: list[str]
) -> dict[str, Any]:
    """The default m.room.power_levels content (Synapse's defaults)."""
    users: dict[str, int] = {}
    if not version.creators_have_infinite_power:
        # v1–11: the creator (and trusted_private_chat invitees) get 100.
        # v12 (MSC4289): creators have infinite power and are not listed.
        users[creator] = 100
        for invitee in trusted_invitees:
            users[invitee] = 100
    # v12: "the power level for sending m.room.tombstone events MUST explicitly
    # be higher than state_default" — and above the 100 of room admins.
    tombstone = 150 if version.creators_have_infinite_power else 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
        "notifications": {"room": 50},
    }


def _parse_initial_state(value: Any) -> list[EventSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MatrixError(400, "M_BAD_JSON", "initial_state must be a list")
    specs: list[EventSpec] = []
    for item in value:
        if not isinstance(item, dict):
            raise MatrixError(400, "M_BAD_JSON", "initial_state entries must be objects")
        event_type = item.get("type")
        state_key = item.get("state_key", "")
        content = item.get("content")
        if not isinstance(event_type, str) or not isinstance(state_key, str):
            raise MatrixError(400, "M_BAD_JSON", "initial_state entries need a type and state_key")
        if not isinstance(content, dict):
            raise MatrixError(400, "M_BAD_JSON", "initial_state entries need a content object")
        specs.append(EventSpec(event_type, content, state_key))
    return specs


async def create_room(rooms: RoomsService, requester: Requester, body: dict[str, Any]) -> str:
    """Create the room; its ID."""
    hs = rooms.hs
    creator = requester.user_id
    visibility = _optional(body, "visibility", str, "a string") or "private"
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
    if visibility == "public":
        await hs.directory.check_may_publish_new_room(creator)  # directory.publish_rule
    preset = _optional(body, "preset", str, "a string")
    if preset is None:
        preset = "public_chat" if visibility == "public" else "private_chat"
    if preset not in PRESETS:
        raise MatrixError(400, "M_INVALID_PARAM", f"Unknown preset {preset!r}")
    version = parse_room_version(body.get("room_version", hs.config.default_room_version))
    name = _optional(body, "name", str, "a string")
    topic = _optional(body, "topic", str, "a string")
    is_direct = _optional(body, "is_direct", bool, "a boolean") or False
    creation_content = dict(_optional(body, "creation_content", dict, "an object") or {})
    override = _optional(body, "power_level_content_override", dict, "an object")
    initial_state = _parse_initial_state(body.get("initial_state"))
    invite_3pid = _optional(body, "invite_3pid", list, "a list")
    if invite_3pid:
        raise MatrixError(
            400,
            "M_INVALID_PARAM",
            "invite_3pid is not supported: this server has no identity server integration yet",
        )

    invitees_raw = _optional(body, "invite", list, "a list of user IDs") or []
    invitees: list[str] = []
    for user_id in invitees_raw:
        if not isinstance(user_id, str) or not is_valid_user_id(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a user ID in invite: {user_id!r}")
        if user_id != creator and user_id not in invitees:
            invitees.append(user_id)
    for user_id in invitees:
        await rooms._check_invitee(user_id)

    alias: str | None = None
    alias_name = _optional(body, "room_alias_name", str, "a string")
    if alias_name is not None:
        alias = f"#{alias_name}:{rooms.server_name}"
        try:
            RoomAlias.parse(alias)
        except InvalidIdentifier:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"Invalid room_alias_name {alias_name!r}"
            ) from None
        if not alias_name or any(c.isspace() for c in alias_name) or len(alias.encode()) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room_alias_name {alias_name!r}")
        if await rooms.store.get_alias(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} is already taken")

    # 1. m.room.create
    create_content = dict(creation_content)
    create_content["room_version"] = version.identifier
    if version.implicit_room_creator:
        create_content.pop("creator", None)  # v11+ (MSC2175): the sender is the creator
    else:
        create_content["creator"] = creator
    if version.creators_have_infinite_power:
        extra = create_content.get("additional_creators", [])
        if not isinstance(extra, list) or not all(
            isinstance(u, str) and is_valid_user_id(u) for u in extra
        ):
            raise MatrixError(
                400, "M_BAD_JSON", "creation_content.additional_creators must be a list of user IDs"
            )
        if preset == "trusted_private_chat":
            # createRoom: trusted_private_chat invitees SHOULD become additional creators.
            extra = list(dict.fromkeys([*extra, *invitees]))
        if extra:
            create_content["additional_creators"] = extra
        elif "additional_creators" in create_content:
            del create_content["additional_creators"]
    elif "additional_creators" in create_content:
        pass  # meaningless before v12; kept as an ordinary key

    specs: list[EventSpec] = [EventSpec("m.room.create", create_content, "")]

    # 2. the creator's join
    profile = await hs.profiles.get_profile_or_empty(creator)
    join_content: dict[str, Any] = {"membership": "join"}
    for key in ("displayname", "avatar_url"):
        if isinstance(profile.get(key), str):
            join_content[key] = profile[key]
    specs.append(EventSpec("m.room.member", join_content, creator))

    # 3. power levels (initial_state's replaces the default; the override applies on top)
    initial_by_key = {(s.type, s.state_key): s for s in initial_state}
    given_pl = initial_by_key.pop(("m.room.power_levels", ""), None)
    trusted = invitees if preset == "trusted_private_chat" else []
    pl_content = (
        dict(given_pl.content)
        if given_pl is not None
        else _default_power_levels(version, creator, trusted)
    )
    if override:
        pl_content.update(override)
    specs.append(EventSpec("m.room.power_levels", pl_content, ""))

    # 4. canonical alias
    if alias is not None:
        specs.append(EventSpec("m.room.canonical_alias", {"alias": alias}, ""))

    # 5. preset (initial_state takes precedence)
    join_rule, history_visibility, guest_access = PRESETS[preset]
    for event_type, content in (
        ("m.room.join_rules", {"join_rule": join_rule}),
        ("m.room.history_visibility", {"history_visibility": history_visibility}),
        ("m.room.guest_access", {"guest_access": guest_access}),
    ):
        if (event_type, "") not in initial_by_key:
            specs.append(EventSpec(event_type, content, ""))

    # 6. initial_state, in order (name and topic parameters override theirs)
    for spec in initial_state:
        given = (spec.type, spec.state_key)
        if given == ("m.room.power_levels", ""):
            continue
        if (name is not None and given == ("m.room.name", "")) or (
            topic is not None and given == ("m.room.topic", "")
        ):
            continue
        specs.append(spec)

    # 7. name and topic
    if name is not None:
        specs.append(EventSpec("m.room.name", {"name": name}, ""))
    if topic is not None:
        specs.append(
            EventSpec(
                "m.room.topic",
                {"topic": topic, "m.topic": [{"body": topic, "mimetype": "text/plain"}]},
                "",
            )
        )

    # 8. invites (of local users; remote ones follow, once the room exists)
    for invitee in (user_id for user_id in invitees if rooms.is_local_user(user_id)):
        invite_content: dict[str, Any] = {"membership": "invite"}
        invitee_profile = await hs.profiles.get_profile_or_empty(invitee)
        for key in ("displayname", "avatar_url"):
            if isinstance(invitee_profile.get(key), str):
                invite_content[key] = invitee_profile[key]
        if is_direct:
            invite_content["is_direct"] = True
        specs.append(EventSpec("m.room.member", invite_content, invitee))

    # v12 room IDs are the create event's hash: two identical createRooms in
    # the same millisecond would collide. Rooms this process creates get
    # strictly increasing timestamps (rooms.creation_ts), and a collision with
    # a room from elsewhere retries one ms later.
    now = rooms.creation_ts()
    for attempt in range(10):
        head = _Head(
            room_id="" if version.room_id_from_create_event else new_room_id(rooms.server_name),
            version=version,
            extremities=[],
            complete=True,
        )
        events = []
        for spec in specs:
            try:
                events.append(await rooms._build_event(head, creator, spec, now_ms=now + attempt))
            except MatrixError as exc:
                if exc.errcode == "M_FORBIDDEN":
                    raise MatrixError(
                        400,
                        "M_INVALID_ROOM_STATE",
                        f"Invalid initial state ({spec.type}): {exc.error}",
                    ) from None
                raise
        new_room = NewRoom(
            room_id=head.room_id,
            room_version=version.identifier,
            creator=creator,
            is_public=visibility == "public",
            created_ts=now,
            alias=alias,
        )
        try:
            await rooms.persist_new_room(head, events, new_room)
        except AliasTaken:
            raise MatrixError(
                400, "M_ROOM_IN_USE", f"Room alias {alias} is already taken"
            ) from None
        except RoomExists:
            continue
        await _invite_remote_users(rooms, creator, head.room_id, invitees, is_direct)
        return head.room_id
    raise MatrixError(500, "M_UNKNOWN", "Could not allocate a room ID")


async def _invite_remote_users(
    rooms: RoomsService, creator: str, room_id: str, invitees: list[str], is_direct: bool
) -> None:
    """Server-Server API, "Inviting to a room": a user of another server is
    invited through its server (PUT /invite), which must sign the invite, so
    it cannot be part of the new room's first batch of events. As Synapse
    does, an invite that fails fails the request (the room exists by then)."""
    extra_content = {"is_direct": True} if is_direct else None
    for invitee in invitees:
        if not rooms.is_local_user(invitee):
            await rooms.update_membership(
                creator, room_id, invitee, "invite", extra_content=extra_content
            )
