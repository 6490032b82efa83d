"""Evaluation for every member of a room (``evaluate_for_users``: users without
rules of their own share one evaluation) and MSC3664 ``related_event_match``
(ranvier/core/push_rules.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.core.push_rules import (
    RELATED_EVENT_MATCH,
    DefaultRuleOverride,
    EvaluationContext,
    InvalidPushRule,
    PushRule,
    build_ruleset,
    condition_matches,
    evaluate,
    evaluate_for_users,
    parse_condition,
    prepare_user_rules,
)

ROOM = "!room:example.org"
USERS = ["@alice:example.org", "@Bob:example.org", "@carol:example.org", "@dan:example.org"]
SOUND = {"set_tweak": "sound", "value": "default"}
HIGHLIGHT = {"set_tweak": "highlight"}


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "m.room.message",
        "sender": "@sender:example.org",
        "room_id": ROOM,
        "content": {"msgtype": "m.text", "body": "hello"},
    }
    base.update(fields)
    return base


def one_by_one(
    users: dict[str, Any], body: dict[str, Any], context: EvaluationContext
) -> dict[str, Any]:
    return {
        user_id: evaluate(
            rules.ruleset,
            body,
            room_member_count=context.room_member_count,
            sender_power_level=context.sender_power_level,
            notification_power_levels=context.notification_power_levels,
        )
        for user_id, rules in users.items()
    }


def test_shared_evaluation_gives_each_member_their_answer() -> None:
    users = {user: prepare_user_rules(user, ()) for user in USERS}
    context = EvaluationContext(room_member_count=5)
    mention = event(
        content={"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [USERS[1]]}}
    )
    results = evaluate_for_users(users, mention, context)
    assert results[USERS[1]] == ["notify", SOUND, HIGHLIGHT]
    assert results[USERS[0]] == results[USERS[2]] == ["notify"]
    # An invite of one member: only that member is invited.
    invite = event(
        type="m.room.member", state_key=USERS[2].upper(), content={"membership": "invite"}
    )
    results = evaluate_for_users(users, invite, context)
    assert results[USERS[2]] == ["notify", SOUND]  # state_key matches case-insensitively
    assert results[USERS[0]] == []  # .m.rule.member_event


def test_users_with_changed_defaults_or_own_rules() -> None:
    muted = {("override", ".m.rule.master"): DefaultRuleOverride(enabled=True)}
    own = PushRule(kind="room", rule_id=ROOM, actions=())
    users = {
        USERS[0]: prepare_user_rules(USERS[0], ()),
        USERS[1]: prepare_user_rules(USERS[1], (), muted),
        USERS[2]: prepare_user_rules(USERS[2], (own,)),
    }
    assert users[USERS[0]].template_key == prepare_user_rules(USERS[3], ()).template_key
    assert users[USERS[1]].template_key != users[USERS[0]].template_key
    assert users[USERS[2]].template_key is None
    results = evaluate_for_users(users, event(), EvaluationContext(room_member_count=3))
    assert results == {USERS[0]: ["notify"], USERS[1]: [], USERS[2]: []}


def test_users_sharing_a_template_share_one_object_and_keep_their_own_rulesets() -> None:
    # One ruleset object per template key, not one per user (memory: a server
    # keeps one UserRules per user who receives events); each user's whole
    # ruleset is still theirs, with their ID in the default rules.
    muted = {("override", ".m.rule.master"): DefaultRuleOverride(enabled=True)}
    sound = {("underride", ".m.rule.message"): DefaultRuleOverride(actions=("notify", SOUND))}
    plain = [prepare_user_rules(user, ()) for user in USERS]
    assert all(rules.template is plain[0].template for rules in plain)
    assert all(rules.own is None for rules in plain)
    for user, rules in zip(USERS, plain, strict=True):
        assert rules.ruleset == build_ruleset(user, ())
    changed = [prepare_user_rules(user, (), muted | sound) for user in USERS[:2]]
    assert changed[0].template is changed[1].template is not plain[0].template
    assert changed[1].ruleset == build_ruleset(USERS[1], (), muted | sound)
    assert changed[1].template == build_ruleset("@\x00template:\x00", (), muted | sound)
    own = PushRule(kind="room", rule_id=ROOM, actions=())
    mine = prepare_user_rules(USERS[2], (own,))
    assert mine.template is None
    assert mine.ruleset is mine.own == build_ruleset(USERS[2], (own,))


def test_display_name_per_user() -> None:
    rule = PushRule(
        kind="override",
        rule_id="name",
        actions=("notify", HIGHLIGHT),
        conditions=({"kind": "contains_display_name"},),
    )
    users = {user: prepare_user_rules(user, (rule,)) for user in USERS[:2]}
    assert users[USERS[0]].uses_display_name
    body = event(content={"msgtype": "m.text", "body": "ask Alicia"})
    results = evaluate_for_users(
        users,
        body,
        EvaluationContext(room_member_count=3),
        {USERS[0]: "alicia", USERS[1]: "Bobby"},
    )
    assert results == {USERS[0]: ["notify", HIGHLIGHT], USERS[1]: ["notify"]}


def test_template_owner_named_in_an_event_falls_back_to_one_by_one() -> None:
    users = {user: prepare_user_rules(user, ()) for user in USERS}
    body = event(content={"body": "x", "m.mentions": {"user_ids": ["@\x00template:\x00"]}})
    results = evaluate_for_users(users, body, EvaluationContext(room_member_count=3))
    assert all(actions == ["notify"] for actions in results.values())


_users = st.lists(
    st.sampled_from([*USERS, "@star*:example.org", "@q?:example.org"]), unique=True, min_size=1
)
_events = st.builds(
    lambda kind, mentions, state_key, body, msgtype: {
        "type": kind,
        "sender": "@sender:example.org",
        "room_id": ROOM,
        **({"state_key": state_key} if state_key is not None else {}),
        "content": {
            "msgtype": msgtype,
            "body": body,
            "membership": "invite",
            "m.mentions": {"user_ids": mentions, "room": True},
        },
    },
    st.sampled_from(["m.room.message", "m.room.member", "m.room.encrypted", "m.call.invite"]),
    st.lists(st.sampled_from([*USERS, "@stars:example.org", USERS[1].lower()]), max_size=3),
    st.one_of(st.none(), st.sampled_from([*USERS, "@starry:example.org", ""])),
    st.text(max_size=10),
    st.sampled_from(["m.text", "m.notice"]),
)


@settings(max_examples=200, deadline=None)
@given(
    users=_users,
    body=_events,
    members=st.integers(1, 4),
    power=st.sampled_from([0, 50, 100]),
    muted=st.booleans(),
)
def test_shared_evaluation_equals_one_by_one(
    users: list[str], body: dict[str, Any], members: int, power: int, muted: bool
) -> None:
    """Whatever the event, the shared path answers what a full evaluation does."""
    overrides = {("underride", ".m.rule.message"): DefaultRuleOverride(actions=())}
    prepared = {
        user: prepare_user_rules(user, (), overrides if muted and i % 2 else None)
        for i, user in enumerate(users)
    }
    context = EvaluationContext(room_member_count=members, sender_power_level=power)
    assert evaluate_for_users(prepared, body, context) == one_by_one(prepared, body, context)


# --- MSC3664 related_event_match ----------------------------------------------------


def reply_to(sender: str, *, falling_back: bool = False) -> EvaluationContext:
    return EvaluationContext(
        room_member_count=3,
        related_events={"m.in_reply_to": {"type": "m.room.message", "sender": sender}},
        fallback_relations=frozenset({"m.in_reply_to"} if falling_back else ()),
    )


REPLY_TO_ALICE = {
    "kind": RELATED_EVENT_MATCH,
    "rel_type": "m.in_reply_to",
    "key": "sender",
    "pattern": USERS[0],
}


def test_related_event_match() -> None:
    body = event()
    assert condition_matches(REPLY_TO_ALICE, body, reply_to(USERS[0]))
    assert not condition_matches(REPLY_TO_ALICE, body, reply_to(USERS[2]))
    assert not condition_matches(REPLY_TO_ALICE, body, EvaluationContext(room_member_count=3))
    # A reply fallback in a thread counts only with include_fallbacks.
    assert not condition_matches(REPLY_TO_ALICE, body, reply_to(USERS[0], falling_back=True))
    with_fallbacks = {**REPLY_TO_ALICE, "include_fallbacks": True}
    assert condition_matches(with_fallbacks, body, reply_to(USERS[0], falling_back=True))
    # Without key and pattern: any event related that way.
    any_reply = {"kind": RELATED_EVENT_MATCH, "rel_type": "m.in_reply_to"}
    assert condition_matches(any_reply, body, reply_to(USERS[2]))
    assert not condition_matches(
        {"kind": RELATED_EVENT_MATCH, "rel_type": "m.thread"}, body, reply_to(USERS[2])
    )


def test_related_event_match_in_a_user_rule() -> None:
    rule = PushRule(
        kind="override",
        rule_id="replies",
        actions=("notify", HIGHLIGHT),
        conditions=(REPLY_TO_ALICE,),
    )
    ruleset = build_ruleset(USERS[0], (rule,))
    users = {USERS[0]: prepare_user_rules(USERS[0], (rule,))}
    results = evaluate_for_users(users, event(), reply_to(USERS[0]))
    assert results == {USERS[0]: ["notify", HIGHLIGHT]}
    assert evaluate(ruleset, event(), room_member_count=3) == ["notify"]


@pytest.mark.parametrize(
    "condition",
    [
        {"kind": RELATED_EVENT_MATCH},
        {"kind": RELATED_EVENT_MATCH, "rel_type": 1},
    ],
)
def test_related_event_match_needs_rel_type(condition: dict[str, Any]) -> None:
    with pytest.raises(InvalidPushRule):
        parse_condition(condition)
