"""The authorization rules, rule by rule, on small hand-built rooms.

Each test names the rule it pins (rule numbers of the room version 10 text;
v12 numbers are one higher from rule 2 on). ``Room`` builds a room's state
without checking it; ``Room.allowed`` authorizes an event against the auth
events the spec's selection picks from that state, and checks that the
state-dependent rules give the same verdict against the full state (as state
resolution calls them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

import pytest

from ranvier.core.auth_rules import (
    INFINITE_POWER,
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
    get_creators,
    get_named_level,
    get_send_level,
    is_valid_user_id,
    parse_power_level,
    user_power_level,
)
from ranvier.core.events import Event, StateKey
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from ranvier.core.signing import SigningKey, encode_base64, sign_json

ALICE = "@alice:a.test"  # creator
BOB = "@bob:b.test"  # 50
MALLORY = "@mallory:b.test"  # 49
OSCAR = "@oscar:c.test"  # 51
CAROL = "@carol:c.test"  # 0
DAVE = "@dave:a.test"  # no membership unless a test gives one
ERIN = "@erin:b.test"

ALL_VERSIONS = [str(n) for n in range(1, 13)]

#: Event IDs are unique across rooms; each ends in the sender's domain (which
#: the v1–v2 redaction rule reads).
_EVENT_NUMBERS = itertools.count(1)


def default_power_levels() -> dict[str, Any]:
    return {
        "users": {ALICE: 100, BOB: 50, MALLORY: 49, OSCAR: 51},
        "users_default": 0,
        "events": {"m.room.power_levels": 50, "m.room.history_visibility": 100},
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": {"room": 50},
    }


class Room:
    """A room's state, built directly (no auth checks while building)."""

    def __init__(
        self,
        version: str = "10",
        *,
        creator: str = ALICE,
        create_content: dict[str, Any] | None = None,
        power_levels: dict[str, Any] | None = None,
        with_power_levels: bool = True,
        join_rule: str | None = "public",
        members: dict[str, str] | None = None,
    ) -> None:
        self.version = get_room_version(version)
        self._count = 0
        self.state: dict[StateKey, Event] = {}
        self.room_id = "!room:" + creator.partition(":")[2]
        content: dict[str, Any] = {"room_version": version}
        if not self.version.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        self.create = self.build("m.room.create", creator, content, state_key="", prev=[])
        if self.version.room_id_from_create_event:
            self.room_id = self.create.room_id
        self.state[self.create.state_tuple] = self.create
        self.set_member(creator, "join")
        if with_power_levels:
            levels = default_power_levels() if power_levels is None else power_levels
            if self.version.creators_have_infinite_power:
                levels.get("users", {}).pop(creator, None)
            self.set_state("m.room.power_levels", "", levels, sender=creator)
        if join_rule is not None:
            self.set_state("m.room.join_rules", "", {"join_rule": join_rule}, sender=creator)
        default_members = {BOB: "join", MALLORY: "join", OSCAR: "join", CAROL: "join"}
        for user, membership in (default_members if members is None else members).items():
            self.set_member(user, membership)

    # -- building events ---------------------------------------------------

    def build(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        prev: list[str] | None = None,
        auth: list[str] | None = None,
        **extra: Any,
    ) -> Event:
        """An event with the given fields; auth_events as given (default none)."""
        self._count += 1
        event_id = f"${next(_EVENT_NUMBERS)}:{sender.partition(':')[2]}"
        prev_ids = [self.create.event_id] if prev is None else prev
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": 1_000 + self._count,
            "depth": self._count,
            "prev_events": self._refs(prev_ids),
            "auth_events": self._refs(auth or []),
        }
        if not (event_type == "m.room.create" and self.version.room_id_from_create_event):
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.version.event_ids_in_pdu:
            pdu["event_id"] = event_id
        pdu.update(extra)
        return Event.from_pdu(self.version, pdu, event_id=event_id)

    def _refs(self, ids: list[str]) -> list[Any]:
        if self.version.event_ids_in_pdu:
            return [[event_id, {"sha256": "AAAA"}] for event_id in ids]
        return list(ids)

    def event(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any] | None = None,
        *,
        state_key: str | None = None,
        prev: list[str] | None = None,
        **extra: Any,
    ) -> Event:
        """An event citing the auth events the selection picks from the state."""
        content = {} if content is None else content
        draft = self.build(event_type, sender, content, state_key=state_key, prev=prev, **extra)
        auth = [
            self.state[key].event_id
            for key in sorted(auth_types_for_event(draft))
            if key in self.state
        ]
        self._count -= 1
        return self.build(
            event_type, sender, content, state_key=state_key, prev=prev, auth=auth, **extra
        )

    def member(
        self,
        sender: str,
        target: str,
        membership: str,
        *,
        prev: list[str] | None = None,
        **content: Any,
    ) -> Event:
        return self.event(
            "m.room.member",
            sender,
            {"membership": membership, **content},
            state_key=target,
            prev=prev,
        )

    def set_state(
        self, event_type: str, state_key: str, content: dict[str, Any], *, sender: str = ALICE
    ) -> Event:
        event = self.event(event_type, sender, content, state_key=state_key)
        self.state[event.state_tuple] = event
        return event

    def set_member(self, user: str, membership: str) -> Event:
        sender = user if membership in ("join", "leave", "knock") else self.create.sender
        event = self.member(sender, user, membership)
        self.state[event.state_tuple] = event
        return event

    def set_power_levels(self, **changes: Any) -> Event:
        content = dict(self.state[("m.room.power_levels", "")].content)
        content.update(changes)
        return self.set_state("m.room.power_levels", "", content)

    # -- authorizing -------------------------------------------------------

    def auth_events_for(self, event: Event) -> list[Event]:
        """The cited auth events, plus (v12) the create event the room ID implies."""
        by_id = {e.event_id: e for e in self.state.values()}
        events = [by_id[event_id] for event_id in event.auth_event_ids if event_id in by_id]
        if self.version.room_id_from_create_event:
            events.append(self.create)
        return events

    def allowed(
        self,
        event: Event,
        *,
        auth_events: Iterable[Event] | None = None,
        rejected: frozenset[str] = frozenset(),
    ) -> bool:
        auth = list(self.auth_events_for(event) if auth_events is None else auth_events)
        try:
            check_auth_rules(event, auth, rejected)
            verdict = True
        except AuthError:
            verdict = False
        if auth_events is None and not rejected:
            # The state-dependent rules look up only what they need, so the
            # full room state gives the same verdict as the auth events.
            try:
                check_state_independent_auth_rules(event, auth)
            except AuthError:
                pass
            else:
                try:
                    check_state_dependent_auth_rules(event, self.state)
                    full_state_verdict = True
                except AuthError:
                    full_state_verdict = False
                assert full_state_verdict == verdict
        return verdict


def versions(first: int = 1, last: int = 12) -> list[str]:
    return [str(n) for n in range(first, last + 1)]


# ---------------------------------------------------------------------------
# Rule 1: m.room.create


def create_event(
    version: str, content: dict[str, Any] | None = None, **pdu: Any
) -> tuple[Room, Event]:
    room = Room(version)
    body = {"room_version": version} if content is None else content
    if not room.version.implicit_room_creator and content is None:
        body["creator"] = ALICE
    return room, room.build("m.room.create", ALICE, body, state_key="", prev=[], **pdu)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_valid(version: str) -> None:
    room, event = create_event(version)
    assert room.allowed(event, auth_events=[])


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_with_prev_events_rejected(version: str) -> None:  # 1.1
    room = Room(version)
    content = {"creator": ALICE, "room_version": version}
    event = room.build("m.room.create", ALICE, content, state_key="", prev=["$other:a.test"])
    assert not room.allowed(event, auth_events=[])


@pytest.mark.parametrize("version", versions(1, 11))
def test_create_room_id_domain_must_match_sender(version: str) -> None:  # 1.2
    room, event = create_event(version, room_id="!room:b.test")
    assert not room.allowed(event, auth_events=[])


def test_v12_create_with_room_id_rejected() -> None:  # v12 1.2
    room, event = create_event("12", room_id="!room:a.test")
    assert not room.allowed(event, auth_events=[])
    room, event = create_event("12")
    assert "room_id" not in event.pdu
    assert room.allowed(event, auth_events=[])


@pytest.mark.parametrize("room_version", ["999", 12, None])
def test_create_unknown_room_version_rejected(room_version: object) -> None:  # 1.3
    room, event = create_event("10", {"creator": ALICE, "room_version": room_version})
    assert not room.allowed(event, auth_events=[])


def test_create_without_room_version_is_version_1() -> None:  # 1.3
    room, event = create_event("10", {"creator": ALICE})
    assert room.allowed(event, auth_events=[])


@pytest.mark.parametrize(
    ("additional", "ok"),
    [
        ([BOB, OSCAR], True),
        ([], True),
        ("@bob:b.test", False),
        ([BOB, 7], False),
        ([BOB, "not-a-user"], False),
        (["@bob:bad_server!"], False),
    ],
)
def test_v12_additional_creators_validated(additional: object, ok: bool) -> None:  # v12 1.4
    content = {"room_version": "12", "additional_creators": additional}
    room, event = create_event("12", content)
    assert room.allowed(event, auth_events=[]) is ok
    # Before v12 additional_creators means nothing to the auth rules.
    room, event = create_event("11", {"room_version": "11", "additional_creators": additional})
    assert room.allowed(event, auth_events=[])


@pytest.mark.parametrize(("version", "ok"), [("1", False), ("10", False), ("11", True)])
def test_create_without_creator(version: str, ok: bool) -> None:  # v1–v10 1.4
    room, event = create_event(version, {"room_version": version})
    assert room.allowed(event, auth_events=[]) is ok


def test_create_creator_may_differ_from_sender() -> None:
    room, event = create_event("10", {"room_version": "10", "creator": BOB})
    assert room.allowed(event, auth_events=[])


def test_state_dependent_rules_allow_create() -> None:
    _, event = create_event("10")
    check_state_dependent_auth_rules(event, {})


# ---------------------------------------------------------------------------
# Rule 2 (v12: 2 and 3): the event's auth_events


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_well_formed_auth_events_allowed(version: str) -> None:
    room = Room(version)
    assert room.allowed(room.event("m.room.message", CAROL, {"body": "hi"}))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_duplicate_auth_event_type_rejected(version: str) -> None:  # 2.1
    room = Room(version)
    old_levels = room.state[("m.room.power_levels", "")]
    room.set_power_levels(ban=40)
    event = room.event("m.room.message", CAROL, {"body": "hi"})
    assert not room.allowed(event, auth_events=[*room.auth_events_for(event), old_levels])


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unexpected_auth_event_type_rejected(version: str) -> None:  # 2.2
    room = Room(version)
    event = room.event("m.room.message", CAROL, {"body": "hi"})
    extra = room.state[("m.room.join_rules", "")]
    assert not room.allowed(event, auth_events=[*room.auth_events_for(event), extra])


def test_non_state_auth_event_rejected() -> None:  # 2.2
    room = Room("10")
    # A message event of type m.room.power_levels (no state_key) that would
    # give carol 100 if it were taken as the power levels.
    fake = room.build("m.room.power_levels", ALICE, {"users": {CAROL: 100}})
    event = room.event("m.room.topic", CAROL, {"topic": "t"}, state_key="")
    auth = [e for e in room.auth_events_for(event) if e.type != "m.room.power_levels"]
    assert not room.allowed(event, auth_events=[*auth, room.state[("m.room.power_levels", "")]])
    assert not room.allowed(event, auth_events=[*auth, fake])


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_rejected_auth_event_rejected(version: str) -> None:  # 2.3
    room = Room(version)
    event = room.event("m.room.message", CAROL, {"body": "hi"})
    carol = room.state[("m.room.member", CAROL)]
    assert not room.allowed(event, rejected=frozenset({carol.event_id}))


@pytest.mark.parametrize("version", versions(1, 11))
def test_missing_create_rejected(version: str) -> None:  # 2.4
    room = Room(version)
    event = room.event("m.room.message", CAROL, {"body": "hi"})
    auth = [e for e in room.auth_events_for(event) if e.type != "m.room.create"]
    assert not room.allowed(event, auth_events=auth)
    # The state-independent half rejects it on its own.
    with pytest.raises(AuthError):
        check_state_independent_auth_rules(event, auth)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_event_from_another_room_rejected(version: str) -> None:  # 2.5
    room = Room(version)
    other = Room(version, creator=BOB)
    event = room.event("m.room.message", CAROL, {"body": "hi"})
    foreign = other.set_member(CAROL, "join")
    auth = [e for e in room.auth_events_for(event) if e.state_tuple != foreign.state_tuple]
    assert not room.allowed(event, auth_events=[*auth, foreign])


def test_v12_create_must_not_be_listed() -> None:  # v12 3.2
    room = Room("12")
    draft = room.event("m.room.message", CAROL, {"body": "hi"})
    assert ("m.room.create", "") not in auth_types_for_event(draft)
    listed = room.build(
        "m.room.message",
        CAROL,
        {"body": "hi"},
        auth=[*draft.auth_event_ids, room.create.event_id],
    )
    assert not room.allowed(listed, auth_events=room.auth_events_for(draft))


def test_v12_room_id_must_be_an_accepted_create_event() -> None:  # v12 2
    room = Room("12")
    event = room.event("m.room.message", CAROL, {"body": "hi"})
    without_create = [e for e in room.auth_events_for(event) if e.type != "m.room.create"]
    assert not room.allowed(event, auth_events=without_create)
    with pytest.raises(AuthError):
        check_state_independent_auth_rules(event, without_create)
    assert not room.allowed(event, rejected=frozenset({room.create.event_id}))
    # A create event whose ID is not the room's.
    other = Room("12")
    assert not room.allowed(event, auth_events=[*without_create, other.create])


def test_check_auth_rules_runs_both_halves() -> None:
    room = Room("10")
    event = room.event("m.room.message", DAVE, {"body": "hi"})
    check_state_independent_auth_rules(event, room.auth_events_for(event))
    with pytest.raises(AuthError):
        check_auth_rules(event, room.auth_events_for(event))


def test_state_dependent_rules_need_the_create_event() -> None:
    room = Room("10")
    event = room.event("m.room.message", CAROL, {"body": "hi"})
    state = {k: v for k, v in room.state.items() if k != ("m.room.create", "")}
    with pytest.raises(AuthError):
        check_state_dependent_auth_rules(event, state)


# ---------------------------------------------------------------------------
# Rule 3: m.federate


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unfederated_room_keeps_other_servers_out(version: str) -> None:
    room = Room(version, create_content={"m.federate": False}, members={})
    assert room.allowed(room.member(DAVE, DAVE, "join"))  # a.test, like the creator
    assert not room.allowed(room.member(BOB, BOB, "join"))
    federated = Room(version, create_content={"m.federate": True}, members={})
    assert federated.allowed(federated.member(BOB, BOB, "join"))


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_unfederated_room_judges_the_sender_not_the_target(version: str) -> None:
    """Rule 3 looks at the sender's domain only: the creator's server may invite,
    kick or ban users of other servers. Synapse also rejects membership events
    whose *target* is on another server; we keep the spec's rule."""
    room = Room(version, create_content={"m.federate": False}, members={BOB: "join"})
    assert room.allowed(room.member(ALICE, ERIN, "invite"))
    assert room.allowed(room.member(ALICE, BOB, "ban"))
    assert room.allowed(room.member(ALICE, BOB, "leave"))
    assert not room.allowed(room.member(BOB, BOB, "leave"))
    assert not room.allowed(room.event("m.room.message", BOB, {"body": "hi"}))


# ---------------------------------------------------------------------------
# v1–v5 rule 4: m.room.aliases


@pytest.mark.parametrize("version", versions(1, 5))
def test_aliases_special_rule(version: str) -> None:
    room = Room(version, members={CAROL: "join", DAVE: "leave"})
    aliases = {"aliases": ["#x:c.test"]}
    # Level 0 may set their own server's aliases, even without being joined.
    assert room.allowed(room.event("m.room.aliases", CAROL, aliases, state_key="c.test"))
    assert room.allowed(room.event("m.room.aliases", DAVE, aliases, state_key="a.test"))
    # Another server's state key, even with enough power, is rejected.
    assert not room.allowed(room.event("m.room.aliases", ALICE, aliases, state_key="c.test"))
    assert not room.allowed(room.event("m.room.aliases", ALICE, aliases, state_key=""))
    # No state_key at all.
    assert not room.allowed(room.event("m.room.aliases", ALICE, aliases))


@pytest.mark.parametrize("version", versions(6, 12))
def test_aliases_ordinary_state_from_v6(version: str) -> None:
    room = Room(version, members={CAROL: "join", BOB: "join", DAVE: "leave"})
    aliases = {"aliases": ["#x:c.test"]}
    assert not room.allowed(room.event("m.room.aliases", CAROL, aliases, state_key="c.test"))
    assert not room.allowed(room.event("m.room.aliases", DAVE, aliases, state_key="a.test"))
    assert room.allowed(room.event("m.room.aliases", BOB, aliases, state_key="c.test"))


# ---------------------------------------------------------------------------
# Rule 4: m.room.member


def test_member_without_membership_or_state_key_rejected() -> None:  # 4.1
    room = Room("10")
    assert not room.allowed(room.event("m.room.member", CAROL, {}, state_key=CAROL))
    assert not room.allowed(room.event("m.room.member", CAROL, {"membership": 1}, state_key=CAROL))
    assert not room.allowed(room.event("m.room.member", CAROL, {"membership": "join"}))
    # Without a state_key, a "kick" would otherwise find a target of level 0.
    assert not room.allowed(room.event("m.room.member", BOB, {"membership": "leave"}))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unknown_membership_rejected(version: str) -> None:  # 4.8
    room = Room(version)
    assert not room.allowed(room.member(CAROL, CAROL, "wave"))


# -- joins (4.3)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_creator_first_join(version: str) -> None:  # 4.3.1
    room = Room(version, with_power_levels=False, join_rule=None, members={})
    del room.state[("m.room.member", ALICE)]
    assert room.allowed(room.member(ALICE, ALICE, "join"))
    # Anyone else right after the create: no join rules, so invite-only.
    assert not room.allowed(room.member(BOB, BOB, "join"))
    # Not right after the create: the ordinary rules (invite-only) apply.
    later = room.member(ALICE, ALICE, "join", prev=["$elsewhere:a.test"])
    assert not room.allowed(later)


@pytest.mark.parametrize(
    ("version", "alice_ok", "bob_ok"), [("10", False, True), ("11", True, False)]
)
def test_creator_is_content_creator_until_v11(version: str, alice_ok: bool, bob_ok: bool) -> None:
    # v1–v10: the creator is content.creator; v11+ (MSC2175): the sender.
    room = Room(
        version,
        create_content={"creator": BOB},
        with_power_levels=False,
        join_rule=None,
        members={},
    )
    del room.state[("m.room.member", ALICE)]
    assert room.allowed(room.member(ALICE, ALICE, "join")) is alice_ok
    assert room.allowed(room.member(BOB, BOB, "join")) is bob_ok


def test_join_for_another_user_rejected() -> None:  # 4.3.2
    room = Room("10")
    assert not room.allowed(room.member(ALICE, DAVE, "join"))


@pytest.mark.parametrize("rule", ["public", "invite", "knock", "restricted", "knock_restricted"])
def test_banned_user_cannot_join(rule: str) -> None:  # 4.3.3
    room = Room("10", join_rule=rule, members={DAVE: "ban", BOB: "join"})
    assert not room.allowed(room.member(DAVE, DAVE, "join", join_authorised_via_users_server=BOB))


@pytest.mark.parametrize(
    ("membership", "ok"), [(None, False), ("invite", True), ("join", True), ("leave", False)]
)
def test_invite_only_join(membership: str | None, ok: bool) -> None:  # 4.3.4
    members = {} if membership is None else {DAVE: membership}
    room = Room("10", join_rule="invite", members=members)
    assert room.allowed(room.member(DAVE, DAVE, "join")) is ok


def test_no_join_rules_means_invite() -> None:  # 4.3.4 (Synapse's default)
    room = Room("10", join_rule=None, members={DAVE: "invite"})
    assert room.allowed(room.member(DAVE, DAVE, "join"))
    assert not room.allowed(room.member(CAROL, CAROL, "join"))
    # Joined users can still update their membership (e.g. a display name).
    room.set_member(CAROL, "join")
    assert room.allowed(room.member(CAROL, CAROL, "join", displayname="C"))


@pytest.mark.parametrize(("version", "ok"), [("6", False), ("7", True)])
def test_knock_rooms_let_invited_users_join_from_v7(version: str, ok: bool) -> None:  # 4.3.4
    room = Room(version, join_rule="knock", members={DAVE: "invite"})
    assert room.allowed(room.member(DAVE, DAVE, "join")) is ok


@pytest.mark.parametrize(
    ("version", "rule", "ok"),
    [
        ("7", "restricted", False),
        ("8", "restricted", True),
        ("9", "knock_restricted", False),
        ("10", "knock_restricted", True),
        ("12", "restricted", True),
    ],
)
def test_restricted_join_authorised(version: str, rule: str, ok: bool) -> None:  # 4.3.5
    room = Room(version, join_rule=rule, members={BOB: "join"})
    join = room.member(DAVE, DAVE, "join", join_authorised_via_users_server=BOB)
    assert room.allowed(join) is ok


@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_restricted_join_rules(rule: str) -> None:  # 4.3.5.1–3
    room = Room(
        "10", join_rule=rule, members={BOB: "join", MALLORY: "join", OSCAR: "leave", DAVE: "invite"}
    )
    room.set_power_levels(invite=50)
    # 1: invited (or joined) users need no authoriser.
    assert room.allowed(room.member(DAVE, DAVE, "join"))
    # 2: no authoriser, an authoriser who is not joined, or one below the invite level.
    assert not room.allowed(room.member(ERIN, ERIN, "join"))
    assert not room.allowed(room.member(ERIN, ERIN, "join", join_authorised_via_users_server=OSCAR))
    assert not room.allowed(
        room.member(ERIN, ERIN, "join", join_authorised_via_users_server=MALLORY)
    )
    assert not room.allowed(room.member(ERIN, ERIN, "join", join_authorised_via_users_server=42))
    # 3: a joined authoriser at the invite level.
    assert room.allowed(room.member(ERIN, ERIN, "join", join_authorised_via_users_server=BOB))


@pytest.mark.parametrize("membership", [None, "invite", "join", "leave"])
def test_public_join(membership: str | None) -> None:  # 4.3.6
    members = {} if membership is None else {DAVE: membership}
    room = Room("10", join_rule="public", members=members)
    assert room.allowed(room.member(DAVE, DAVE, "join"))


@pytest.mark.parametrize("rule", ["private", "nonsense"])
def test_other_join_rules_reject(rule: str) -> None:  # 4.3.7
    room = Room("10", join_rule=rule, members={DAVE: "invite", CAROL: "join"})
    assert not room.allowed(room.member(DAVE, DAVE, "join"))
    assert not room.allowed(room.member(CAROL, CAROL, "join"))


# -- invites (4.4)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_invite_levels(version: str) -> None:  # 4.4.4 / 4.4.5
    room = Room(version)
    room.set_power_levels(invite=50)
    assert room.allowed(room.member(BOB, DAVE, "invite"))  # 50
    assert room.allowed(room.member(OSCAR, DAVE, "invite"))  # 51
    assert not room.allowed(room.member(MALLORY, DAVE, "invite"))  # 49


def test_invite_needs_joined_sender() -> None:  # 4.4.2
    room = Room("10", members={BOB: "invite", OSCAR: "leave"})
    assert not room.allowed(room.member(BOB, DAVE, "invite"))
    assert not room.allowed(room.member(OSCAR, DAVE, "invite"))


@pytest.mark.parametrize(
    ("membership", "ok"), [("join", False), ("ban", False), ("leave", True), ("invite", True)]
)
def test_invite_target_membership(membership: str, ok: bool) -> None:  # 4.4.3
    room = Room("10", members={DAVE: membership})
    assert room.allowed(room.member(ALICE, DAVE, "invite")) is ok


# -- third-party invites (4.4.1)

ID_SERVER_KEY = SigningKey("1", bytes(range(32)))
OTHER_KEY = SigningKey("1", bytes(range(1, 33)))


def third_party_room(
    version: str = "10",
    *,
    content: dict[str, Any] | None = None,
    sender: str = ALICE,
    members: dict[str, str] | None = None,
) -> Room:
    room = Room(version, members={BOB: "join", **(members or {})})
    invite_content = (
        {"public_key": encode_base64(ID_SERVER_KEY.verify_key), "display_name": "d...@e.org"}
        if content is None
        else content
    )
    room.set_state("m.room.third_party_invite", "tok", invite_content, sender=sender)
    return room


def signed_block(
    mxid: str = DAVE, token: str = "tok", key: SigningKey = ID_SERVER_KEY
) -> dict[str, Any]:
    return sign_json({"mxid": mxid, "token": token}, "id.test", key)


def third_party_invite(
    room: Room, signed: Any, *, sender: str = ALICE, target: str = DAVE
) -> Event:
    return room.member(
        sender, target, "invite", third_party_invite={"display_name": "d", "signed": signed}
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_third_party_invite_valid(version: str) -> None:  # 4.4.1.7
    room = third_party_room(version)
    assert room.allowed(third_party_invite(room, signed_block()))


def test_third_party_invite_key_in_public_keys_list() -> None:  # 4.4.1.7.2
    keys = [
        {"public_key": "not base64!"},
        {"public_key": encode_base64(OTHER_KEY.verify_key)},
        {"public_key": encode_base64(ID_SERVER_KEY.verify_key)},
        "junk",
    ]
    room = third_party_room(content={"public_key": "!!", "public_keys": keys})
    assert room.allowed(third_party_invite(room, signed_block()))


def test_third_party_invite_banned_target() -> None:  # 4.4.1.1
    room = third_party_room(members={DAVE: "ban"})
    assert not room.allowed(third_party_invite(room, signed_block()))


@pytest.mark.parametrize(
    "signed",
    [
        None,  # 4.4.1.2: no signed
        "signed",
        {"mxid": DAVE},  # 4.4.1.3: no token
        {"token": "tok"},  # 4.4.1.3: no mxid
    ],
)
def test_third_party_invite_malformed(signed: Any) -> None:
    room = third_party_room()
    assert not room.allowed(third_party_invite(room, signed))


def test_third_party_invite_not_an_object() -> None:  # 4.4.1.2
    room = third_party_room()
    assert not room.allowed(room.member(ALICE, DAVE, "invite", third_party_invite="x"))


def test_third_party_invite_mxid_mismatch() -> None:  # 4.4.1.4
    room = third_party_room()
    assert not room.allowed(third_party_invite(room, signed_block(mxid=ERIN)))


def test_third_party_invite_unknown_token() -> None:  # 4.4.1.5
    room = third_party_room()
    assert not room.allowed(third_party_invite(room, signed_block(token="other")))


def test_third_party_invite_sender_mismatch() -> None:  # 4.4.1.6
    room = third_party_room()
    assert not room.allowed(third_party_invite(room, signed_block(), sender=BOB))


def test_third_party_invite_bad_signatures() -> None:  # 4.4.1.8
    room = third_party_room()
    assert not room.allowed(third_party_invite(room, signed_block(key=OTHER_KEY)))
    corrupted = signed_block()
    sig = corrupted["signatures"]["id.test"]["ed25519:1"]
    corrupted["signatures"]["id.test"]["ed25519:1"] = ("B" if sig[0] == "A" else "A") + sig[1:]
    assert not room.allowed(third_party_invite(room, corrupted))
    unsigned = {"mxid": DAVE, "token": "tok"}
    assert not room.allowed(third_party_invite(room, unsigned))
    odd = {"mxid": DAVE, "token": "tok", "signatures": {"id.test": "x", "x": {"ed25519:1": 5}}}
    assert not room.allowed(third_party_invite(room, odd))


def test_third_party_invite_skips_the_invite_level() -> None:  # 4.4.1.7
    # The 3PID branch decides on its own: the invite level is not consulted.
    room = third_party_room(sender=BOB)
    room.set_power_levels(invite=100)
    assert room.allowed(third_party_invite(room, signed_block(), sender=BOB))
    assert not room.allowed(room.member(BOB, ERIN, "invite"))


# -- leaves and kicks (4.5)


@pytest.mark.parametrize(
    ("membership", "ok"),
    [
        ("join", True),
        ("invite", True),
        ("knock", True),
        ("leave", False),
        ("ban", False),
        (None, False),
    ],
)
def test_leave_self(membership: str | None, ok: bool) -> None:  # 4.5.1
    room = Room("10", members={} if membership is None else {DAVE: membership})
    assert room.allowed(room.member(DAVE, DAVE, "leave")) is ok


def test_kick_needs_joined_sender() -> None:  # 4.5.2
    room = Room("10", members={BOB: "leave", CAROL: "join"})
    assert not room.allowed(room.member(BOB, CAROL, "leave"))


def test_unban_needs_ban_level() -> None:  # 4.5.3
    room = Room("10", members={BOB: "join", MALLORY: "join", DAVE: "ban"})
    room.set_power_levels(ban=50, kick=40)
    assert room.allowed(room.member(BOB, DAVE, "leave"))
    assert not room.allowed(room.member(MALLORY, DAVE, "leave"))  # 49 >= kick, < ban
    room.set_power_levels(ban=50, kick=75)
    assert not room.allowed(room.member(BOB, DAVE, "leave"))  # >= ban, < kick


@pytest.mark.parametrize(
    ("sender", "target", "ok"),
    [
        (BOB, CAROL, True),  # 50 kicks 0
        (BOB, MALLORY, True),  # 50 kicks 49
        (OSCAR, BOB, True),  # 51 kicks 50
        (BOB, BOB + "x", True),  # a user with no membership, level 0
        (MALLORY, CAROL, False),  # 49 < kick 50
        (BOB, OSCAR, False),  # target higher
        (BOB, "@peggy:a.test", False),  # target equal
        (BOB, ALICE, False),
    ],
)
def test_kick(sender: str, target: str, ok: bool) -> None:  # 4.5.4 / 4.5.5
    levels = default_power_levels()
    levels["users"]["@peggy:a.test"] = 50
    room = Room("10", power_levels=levels)
    room.set_member("@peggy:a.test", "join")
    assert room.allowed(room.member(sender, target, "leave")) is ok


# -- bans (4.6)


@pytest.mark.parametrize(
    ("sender", "target", "ok"),
    [
        (BOB, CAROL, True),
        (OSCAR, BOB, True),
        (ALICE, DAVE, True),  # pre-emptive ban of a non-member
        (MALLORY, CAROL, False),  # below the ban level
        (BOB, OSCAR, False),  # target higher
        (BOB, MALLORY, True),
    ],
)
def test_ban(sender: str, target: str, ok: bool) -> None:  # 4.6.2 / 4.6.3
    room = Room("10")
    assert room.allowed(room.member(sender, target, "ban")) is ok


def test_ban_needs_joined_sender() -> None:  # 4.6.1
    room = Room("10", members={BOB: "leave", CAROL: "join"})
    assert not room.allowed(room.member(BOB, CAROL, "ban"))


# -- knocks (4.7)


@pytest.mark.parametrize(
    ("version", "rule", "ok"),
    [
        ("6", "knock", False),  # membership knock is unknown before v7
        ("7", "knock", True),
        ("9", "knock_restricted", False),
        ("10", "knock_restricted", True),
        ("10", "invite", False),
        ("10", "public", False),
        ("10", "restricted", False),
    ],
)
def test_knock_join_rule(version: str, rule: str, ok: bool) -> None:  # 4.7.1
    room = Room(version, join_rule=rule, members={})
    assert room.allowed(room.member(DAVE, DAVE, "knock")) is ok


def test_knock_for_another_user_rejected() -> None:  # 4.7.2
    room = Room("10", join_rule="knock", members={})
    assert not room.allowed(room.member(ERIN, DAVE, "knock"))


@pytest.mark.parametrize(
    ("membership", "ok"), [("ban", False), ("invite", False), ("join", False), ("leave", True)]
)
def test_knock_from_membership(membership: str, ok: bool) -> None:  # 4.7.3 / 4.7.4
    room = Room("10", join_rule="knock", members={DAVE: membership})
    assert room.allowed(room.member(DAVE, DAVE, "knock")) is ok


# ---------------------------------------------------------------------------
# Rules 5–8: membership, third-party invite events, required levels, @ state keys


@pytest.mark.parametrize("membership", [None, "invite", "leave", "ban", "knock"])
def test_non_members_cannot_send(membership: str | None) -> None:  # 5
    room = Room("10", members={} if membership is None else {DAVE: membership})
    assert not room.allowed(room.event("m.room.message", DAVE, {"body": "hi"}))


def test_third_party_invite_event_needs_invite_level() -> None:  # 6
    room = Room("10")
    room.set_power_levels(invite=50, events={"m.room.third_party_invite": 0})
    content = {"public_key": "x", "display_name": "d"}
    assert room.allowed(room.event("m.room.third_party_invite", BOB, content, state_key="t"))
    assert not room.allowed(
        room.event("m.room.third_party_invite", MALLORY, content, state_key="t")
    )
    # The invite level decides, not the event's required level (rule 7).
    room.set_power_levels(invite=0, events={"m.room.third_party_invite": 100})
    assert room.allowed(room.event("m.room.third_party_invite", CAROL, content, state_key="t"))


def test_required_power_level_for_state() -> None:  # 7
    room = Room("10")
    topic = {"topic": "t"}
    assert room.allowed(room.event("m.room.topic", BOB, topic, state_key=""))  # 50 = state_default
    assert not room.allowed(room.event("m.room.topic", MALLORY, topic, state_key=""))
    assert not room.allowed(room.event("com.example.x", CAROL, {}, state_key=""))
    # events overrides state_default, both ways.
    room.set_power_levels(events={"m.room.topic": 0, "m.room.name": 52})
    assert room.allowed(room.event("m.room.topic", CAROL, topic, state_key=""))
    assert not room.allowed(room.event("m.room.name", OSCAR, {"name": "n"}, state_key=""))


def test_required_power_level_for_messages() -> None:  # 7
    room = Room("10")
    assert room.allowed(room.event("m.room.message", CAROL, {"body": "hi"}))
    room.set_power_levels(events_default=10)
    assert not room.allowed(room.event("m.room.message", CAROL, {"body": "hi"}))
    assert room.allowed(room.event("m.room.message", MALLORY, {"body": "hi"}))
    room.set_power_levels(events_default=10, events={"m.reaction": 0})
    assert room.allowed(room.event("m.reaction", CAROL, {}))


def test_users_default() -> None:  # 7 (users_default)
    room = Room("10")
    room.set_power_levels(users_default=50)
    assert room.allowed(room.event("m.room.topic", CAROL, {"topic": "t"}, state_key=""))


@pytest.mark.parametrize("version", versions(1, 11))
def test_without_power_levels_creator_has_100(version: str) -> None:  # 7 (schema defaults)
    room = Room(version, with_power_levels=False)
    assert room.allowed(room.event("m.room.topic", ALICE, {"topic": "t"}, state_key=""))
    # Everybody else has 0 and state_default is 50.
    assert not room.allowed(room.event("m.room.topic", CAROL, {"topic": "t"}, state_key=""))
    assert room.allowed(room.event("m.room.message", CAROL, {"body": "hi"}))


@pytest.mark.parametrize(
    ("state_key", "ok"), [(CAROL, True), (BOB, False), (CAROL + "_x", False), ("@", False)]
)
def test_state_key_starting_with_at(state_key: str, ok: bool) -> None:  # 8
    room = Room("10")
    room.set_power_levels(events={"com.example.user": 0})
    assert room.allowed(room.event("com.example.user", CAROL, {}, state_key=state_key)) is ok


def test_state_key_of_another_user_rejected_even_for_creator() -> None:  # 8
    room = Room("10")
    assert not room.allowed(room.event("com.example.user", ALICE, {}, state_key=BOB))


# ---------------------------------------------------------------------------
# Rule 9 (v12: 10): m.room.power_levels


def pl_event(room: Room, sender: str, **changes: Any) -> Event:
    content = dict(room.state[("m.room.power_levels", "")].content)
    content.update(changes)
    content = {k: v for k, v in content.items() if v is not REMOVE}
    return room.event("m.room.power_levels", sender, content, state_key="")


REMOVE = object()


def users_with(room: Room, **levels: Any) -> dict[str, Any]:
    users = dict(room.state[("m.room.power_levels", "")].content["users"])
    for user, level in levels.items():
        key = {"bob": BOB, "mallory": MALLORY, "oscar": OSCAR, "carol": CAROL, "dave": DAVE}[user]
        if level is REMOVE:
            users.pop(key, None)
        else:
            users[key] = level
    return users


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_users_must_map_user_ids_to_levels(version: str) -> None:  # 9.1 / 9.3
    room = Room(version)
    assert room.allowed(pl_event(room, ALICE, users=users_with(room, carol=10)))
    assert not room.allowed(pl_event(room, ALICE, users={**users_with(room), "not-a-user": 10}))
    assert not room.allowed(pl_event(room, ALICE, users=users_with(room, carol="fifty")))
    assert not room.allowed(pl_event(room, ALICE, users=users_with(room, carol=True)))
    assert not room.allowed(pl_event(room, ALICE, users=[BOB]))
    assert room.allowed(pl_event(room, ALICE, users=REMOVE))


@pytest.mark.parametrize(
    ("version", "ok"), [("1", True), ("9", True), ("10", False), ("12", False)]
)
def test_string_levels_until_v10(version: str, ok: bool) -> None:  # v10 9.1–9.3 (MSC3667)
    room = Room(version)
    assert room.allowed(pl_event(room, ALICE, ban="50")) is ok
    assert room.allowed(pl_event(room, ALICE, users=users_with(room, carol="10"))) is ok
    assert room.allowed(pl_event(room, ALICE, events={"m.room.name": "50"})) is ok
    assert room.allowed(pl_event(room, ALICE, notifications={"room": "50"})) is ok


@pytest.mark.parametrize("version", versions(10, 12))
def test_v10_levels_must_be_integers(version: str) -> None:  # v10 9.1 / 9.2
    room = Room(version)
    assert not room.allowed(pl_event(room, ALICE, kick=True))
    assert not room.allowed(pl_event(room, ALICE, state_default=50.0))
    assert not room.allowed(pl_event(room, ALICE, events=[]))
    assert not room.allowed(pl_event(room, ALICE, notifications="room"))
    assert room.allowed(pl_event(room, ALICE, events={}, notifications={"room": 0}))


# Fragment v1-floaty-power-levels (v1–v5); from v6 a float is not a level.
@pytest.mark.parametrize(("version", "ok"), [("1", True), ("5", True), ("6", False), ("9", False)])
def test_float_levels_in_v1_to_v5(version: str, ok: bool) -> None:
    room = Room(version)
    assert room.allowed(pl_event(room, ALICE, users=users_with(room, carol=50.57))) is ok


def test_floats_truncate_and_must_be_finite() -> None:  # fragment v1-floaty-power-levels
    room = Room("3")
    room.set_power_levels(users=users_with(room, carol=50.99))
    assert user_power_level(room.state, CAROL) == 50
    for bad in (math.inf, -math.inf, math.nan):
        assert not room.allowed(pl_event(room, ALICE, ban=bad))
        assert not room.allowed(pl_event(room, ALICE, events={"m.room.name": bad}))


def test_no_previous_power_levels_allows_anything() -> None:  # 9.4
    room = Room("10", with_power_levels=False)
    content = {"users": {ALICE: 100, CAROL: 1000}, "ban": 1000}
    assert room.allowed(room.event("m.room.power_levels", ALICE, content, state_key=""))


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({"ban": 40}, True),  # lower a level at or below your own
        ({"ban": 50}, True),  # unchanged
        ({"kick": 60}, False),  # new value above own
        ({"users_default": 51}, False),
        ({"invite": REMOVE}, True),  # removed, old value 0
        ({"state_default": 50, "events_default": 50}, True),
    ],
)
def test_named_level_changes(changes: dict[str, Any], ok: bool) -> None:  # 9.5
    room = Room("10")
    assert room.allowed(pl_event(room, BOB, **changes)) is ok


def test_named_level_above_sender_cannot_change() -> None:  # 9.5.1
    room = Room("10")
    room.set_power_levels(redact=60)
    assert not room.allowed(pl_event(room, BOB, redact=40))
    assert not room.allowed(pl_event(room, BOB, redact=REMOVE))
    # Untouched, it does not matter that it is above the sender.
    assert room.allowed(pl_event(room, BOB, ban=40))


def test_events_changes() -> None:  # 9.6 / 9.7
    room = Room("10")
    events = dict(room.state[("m.room.power_levels", "")].content["events"])
    # 9.6: history_visibility is at 100, above bob's 50: no changing or removing.
    assert not room.allowed(pl_event(room, BOB, events={**events, "m.room.history_visibility": 50}))
    del events["m.room.history_visibility"]
    assert not room.allowed(pl_event(room, BOB, events=events))
    # 9.7: adding above own level; adding at own level is fine.
    events = dict(room.state[("m.room.power_levels", "")].content["events"])
    assert not room.allowed(pl_event(room, BOB, events={**events, "m.room.topic": 60}))
    assert room.allowed(pl_event(room, BOB, events={**events, "m.room.topic": 50}))


@pytest.mark.parametrize(("version", "ok"), [("5", True), ("6", False), ("12", False)])
def test_notifications_checked_from_v6(version: str, ok: bool) -> None:  # 9.6 / 9.7 (MSC2209)
    room = Room(version)
    assert room.allowed(pl_event(room, BOB, notifications={"room": 60})) is ok


def test_notifications_old_value_above_sender() -> None:  # 9.6
    room = Room("10")
    room.set_power_levels(notifications={"room": 80})
    assert not room.allowed(pl_event(room, BOB, notifications={}))


@pytest.mark.parametrize(
    ("users", "ok"),
    [
        ({"mallory": 20}, True),  # lower a user below you
        ({"mallory": REMOVE}, True),
        ({"mallory": 50}, True),  # promote to your own level
        ({"mallory": 51}, False),  # 9.9: above your own level
        ({"dave": 51}, False),
        ({"dave": 50}, True),
        ({"oscar": 0}, False),  # 9.8: a user above you
        ({"bob": 10}, True),  # your own entry: lowering yourself
        ({"bob": 60}, False),  # 9.9: raising yourself
    ],
)
def test_users_changes(users: dict[str, Any], ok: bool) -> None:  # 9.8 / 9.9
    room = Room("10")
    assert room.allowed(pl_event(room, BOB, users=users_with(room, **users))) is ok


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_power_levels_with_a_state_key_compare_with_their_own_previous(version: str) -> None:
    """9.4 for ``m.room.power_levels`` with a non-empty state key: the previous
    event is the one with the same state key (none: allow), as in Synapse's
    ``_check_power_levels``, not the room's power levels."""
    room = Room(version)
    creator = [] if room.version.creators_have_infinite_power else [ALICE]
    # Bob (50) drops every entry, Alice's 100 included: there is no previous "x".
    bobs = room.event("m.room.power_levels", BOB, {"users": {BOB: 50}}, state_key="x")
    assert room.allowed(bobs)
    # The content rules (9.1–9.3; v12 10.4) still apply.
    bad = room.event("m.room.power_levels", BOB, {"users": {"carol": 1}}, state_key="x")
    assert not room.allowed(bad)
    # With a previous "x" in the state, Bob may not lower a level above his own…
    room.set_state("m.room.power_levels", "x", {"users": {OSCAR: 51, CAROL: 0}}, sender=ALICE)
    lowering = room.event("m.room.power_levels", BOB, {"users": {CAROL: 0}}, state_key="x")
    with pytest.raises(AuthError):
        check_state_dependent_auth_rules(lowering, room.state)
    # …but may change what the room's power levels would forbid him.
    room_levels = room.state[("m.room.power_levels", "")].content["users"]
    assert all(room_levels[user] > 50 for user in [*creator, OSCAR])
    untouched = {"users": {OSCAR: 51, CAROL: 40}}
    allowed = room.event("m.room.power_levels", BOB, untouched, state_key="x")
    check_state_dependent_auth_rules(allowed, room.state)
    # The sender's power still comes from the room's power levels ("").
    carols = room.event("m.room.power_levels", CAROL, {}, state_key="y")
    assert not room.allowed(carols)


def test_users_at_equal_level_cannot_change() -> None:  # 9.8 ("greater than or equal")
    levels = default_power_levels()
    levels["users"]["@peggy:a.test"] = 50
    room = Room("10", power_levels=levels)
    users = dict(levels["users"])
    users["@peggy:a.test"] = 40
    assert not room.allowed(pl_event(room, BOB, users=users))
    del users["@peggy:a.test"]
    assert not room.allowed(pl_event(room, BOB, users=users))


def test_stringy_equal_value_is_unchanged() -> None:  # 9.5 (v1–v9): "50" and 50 are one level
    room = Room("9")
    room.set_power_levels(redact="60")
    assert room.allowed(pl_event(room, BOB, redact=60, ban=40))


def test_power_levels_need_the_event_level() -> None:  # 7 for m.room.power_levels
    room = Room("10")
    assert not room.allowed(pl_event(room, CAROL, ban=0))
    room.set_member(BOB, "leave")
    assert not room.allowed(pl_event(room, BOB, ban=40))


# -- v12: creators (MSC4289)


def test_v12_creators_cannot_be_listed_in_users() -> None:  # v12 10.4
    room = Room("12", create_content={"additional_creators": [OSCAR]})
    assert not room.allowed(pl_event(room, ALICE, users=users_with(room) | {ALICE: 100}))
    assert not room.allowed(pl_event(room, ALICE, users=users_with(room)))  # lists oscar
    assert room.allowed(pl_event(room, ALICE, users=users_with(room, oscar=REMOVE)))


def test_v11_creator_may_be_listed_in_users() -> None:
    room = Room("11")
    assert room.allowed(pl_event(room, ALICE, users=users_with(room) | {ALICE: 100}))


def test_v12_creators_have_infinite_power() -> None:
    levels = default_power_levels()
    del levels["users"][OSCAR]
    room = Room("12", create_content={"additional_creators": [OSCAR]}, power_levels=levels)
    assert user_power_level(room.state, ALICE) == INFINITE_POWER
    assert user_power_level(room.state, OSCAR) == INFINITE_POWER
    assert get_creators(room.create) == {ALICE, OSCAR}
    # An additional creator may send what needs 100 and promote anyone.
    assert room.allowed(
        room.event(
            "m.room.history_visibility", OSCAR, {"history_visibility": "shared"}, state_key=""
        )
    )
    assert room.allowed(pl_event(room, OSCAR, users=users_with(room, bob=100, oscar=REMOVE)))
    # Creators cannot kick or ban each other (neither is below the other).
    assert not room.allowed(room.member(OSCAR, ALICE, "leave"))
    assert not room.allowed(room.member(ALICE, OSCAR, "ban"))
    # Nobody can kick a creator.
    assert not room.allowed(room.member(BOB, ALICE, "leave"))


def test_v12_creators_infinite_without_power_levels() -> None:
    room = Room("12", with_power_levels=False, create_content={"additional_creators": [BOB]})
    assert user_power_level(room.state, ALICE) == INFINITE_POWER
    assert user_power_level(room.state, BOB) == INFINITE_POWER
    assert user_power_level(room.state, CAROL) == 0
    assert room.allowed(room.event("m.room.topic", BOB, {"topic": "t"}, state_key=""))


def test_before_v12_additional_creators_are_ordinary_users() -> None:
    room = Room("11", create_content={"additional_creators": [OSCAR]})
    assert user_power_level(room.state, OSCAR) == 51
    assert get_creators(room.create) == {ALICE}
    assert room.allowed(room.member(ALICE, OSCAR, "leave"))


# ---------------------------------------------------------------------------
# v1–v2 rule 11: m.room.redaction


@pytest.mark.parametrize("version", ["1", "2"])
def test_redaction_domain_rule_v1_v2(version: str) -> None:
    room = Room(version)
    # Redact level: allowed whatever the target.
    assert room.allowed(room.event("m.room.redaction", BOB, {}, redacts="$x:c.test"))
    # Below the redact level: only events whose ID has the redaction's domain.
    # (Event IDs made by Room end in the sender's domain.)
    assert room.allowed(room.event("m.room.redaction", CAROL, {}, redacts="$x:c.test"))
    assert not room.allowed(room.event("m.room.redaction", MALLORY, {}, redacts="$x:c.test"))
    assert not room.allowed(room.event("m.room.redaction", MALLORY, {}))


@pytest.mark.parametrize("version", versions(3, 12))
def test_redaction_not_restricted_from_v3(version: str) -> None:
    room = Room(version)
    extra = {"content": {"redacts": "$x:c.test"}} if room.version.redacts_in_content else {}
    event = room.event("m.room.redaction", MALLORY, extra.get("content", {}), redacts="$x:c.test")
    assert room.allowed(event)
    # Its required power level still applies (rule 7).
    room.set_power_levels(events={"m.room.redaction": 50})
    event = room.event("m.room.redaction", MALLORY, {}, redacts="$x:c.test")
    assert not room.allowed(event)


# ---------------------------------------------------------------------------
# Auth events selection (Server-Server API)


def test_selection_for_create_is_empty() -> None:
    _, event = create_event("10")
    assert auth_types_for_event(event) == set()


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_selection_for_a_message(version: str) -> None:
    room = Room(version)
    expected = {("m.room.power_levels", ""), ("m.room.member", CAROL)}
    if version != "12":
        expected.add(("m.room.create", ""))
    assert auth_types_for_event(room.event("m.room.message", CAROL, {})) == expected


def test_selection_for_memberships() -> None:
    room = Room("10")
    base = {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB)}
    target = ("m.room.member", DAVE)
    join_rules = ("m.room.join_rules", "")
    assert auth_types_for_event(room.member(BOB, DAVE, "invite")) == base | {target, join_rules}
    assert auth_types_for_event(room.member(BOB, DAVE, "ban")) == base | {target}
    assert auth_types_for_event(room.member(BOB, DAVE, "leave")) == base | {target}
    knock = room.member(DAVE, DAVE, "knock")
    assert auth_types_for_event(knock) == {
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        target,
        join_rules,
    }


def test_selection_third_party_invite_token() -> None:
    room = Room("10")
    invite = third_party_invite(room, signed_block())
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(invite)
    for signed in (None, {"mxid": DAVE}, {"mxid": DAVE, "token": 5}):
        invite = third_party_invite(room, signed)
        assert not any(t == "m.room.third_party_invite" for t, _ in auth_types_for_event(invite))
    bare = room.member(BOB, DAVE, "invite", third_party_invite="x")
    assert not any(t == "m.room.third_party_invite" for t, _ in auth_types_for_event(bare))


@pytest.mark.parametrize(("version", "included"), [("7", False), ("8", True), ("12", True)])
def test_selection_join_authorised_via(version: str, included: bool) -> None:
    room = Room(version)
    join = room.member(DAVE, DAVE, "join", join_authorised_via_users_server=BOB)
    assert (("m.room.member", BOB) in auth_types_for_event(join)) is included
    # Only for joins.
    leave = room.member(DAVE, DAVE, "leave", join_authorised_via_users_server=BOB)
    assert ("m.room.member", BOB) not in auth_types_for_event(leave)


# ---------------------------------------------------------------------------
# Helpers


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (ALICE, True),
        ("@:a.test", True),  # historical: empty localpart
        ("@Ünïcode:a.test", True),  # historical: any code point but : and NUL
        ("@a:[::1]:8448", True),
        ("@a:1.2.3.4", True),
        ("@a:a.test:8448", True),
        ("alice:a.test", False),
        ("@alice", False),
        ("@a\x00b:a.test", False),
        ("@\ud800:a.test", False),  # a lone surrogate is not a legal code point
        ("@a:", False),
        ("@a:bad_server", False),
        ("@a:a.test:port", False),
        ("@" + "a" * 250 + ":a.test", False),  # over 255 bytes
        (7, False),
    ],
)
def test_is_valid_user_id(value: object, ok: bool) -> None:
    assert is_valid_user_id(value) is ok


@pytest.mark.parametrize(
    ("version", "value", "expected"),
    [
        ("9", 50, 50),
        ("9", "50", 50),
        ("9", " +050 ", 50),  # fragment v1-stringy-power-levels
        ("9", "-7", -7),
        ("9", "5_0", None),  # Python int() would accept it; the spec's grammar does not
        ("9", "50.0", None),
        ("9", "", None),
        ("9", "٥٠", None),  # Arabic-Indic digits: not base 10 ASCII
        ("9", True, None),
        ("9", 50.0, None),
        ("5", 50.9, 50),
        ("5", -50.9, -50),
        ("5", math.nan, None),
        ("10", "50", None),
        ("10", 50, 50),
        ("10", None, None),
    ],
)
def test_parse_power_level(version: str, value: object, expected: int | None) -> None:
    assert parse_power_level(get_room_version(version), value) == expected


def test_user_power_level_defaults() -> None:
    room = Room("10")
    assert user_power_level(room.state, ALICE) == 100
    assert user_power_level(room.state, CAROL) == 0
    room.set_power_levels(users_default=5, users={BOB: 50, CAROL: "bad"})
    assert user_power_level(room.state, DAVE) == 5
    # A malformed entry (not possible in an accepted v10 event, but state can
    # hold anything) counts as absent.
    assert user_power_level(room.state, CAROL) == 5
    assert user_power_level({}, ALICE) == 0


def test_named_and_send_levels() -> None:
    room = Room("10", with_power_levels=False)
    assert get_named_level(room.state, "ban") == 50
    assert get_named_level(room.state, "invite") == 0
    assert get_send_level(room.state, "m.room.topic", True) == 50
    assert get_send_level(room.state, "m.room.message", False) == 0
    room.set_state(
        "m.room.power_levels",
        "",
        {"ban": "x", "kick": 10, "events": {"m.room.topic": 5, "m.room.name": "x"}},
    )
    assert get_named_level(room.state, "ban") == 50  # malformed: the default
    assert get_named_level(room.state, "kick") == 10
    assert get_send_level(room.state, "m.room.topic", True) == 5
    assert get_send_level(room.state, "m.room.name", True) == 50


def test_flags_cover_every_version() -> None:
    # The flags this module switches on exist for every known version.
    for version in KNOWN_ROOM_VERSIONS.values():
        assert version.float_power_levels is (int(version.identifier) <= 5)
