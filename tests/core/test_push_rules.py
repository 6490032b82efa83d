"""Push rules as data and their evaluation (ranvier/core/push_rules.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.core.property_paths import split_property_path
from ranvier.core.push_rules import (
    KINDS,
    MASTER_RULE_ID,
    USER_ID_PLACEHOLDER,
    DefaultRuleOverride,
    InvalidPushRule,
    PushRule,
    UnknownRelativeRule,
    build_ruleset,
    check_kind,
    check_new_rule_id,
    default_rules,
    evaluate,
    glob_matches,
    interpret_actions,
    parse_actions,
    parse_condition,
    parse_rule_body,
    position_rule,
)
from tests.vectors import REPO_ROOT

PUSH_MD = (
    REPO_ROOT.parent
    / "shared"
    / "matrix-spec"
    / "content"
    / "client-server-api"
    / "modules"
    / "push.md"
)
ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!room:example.org"


def _spec_definitions(heading: str) -> list[dict[str, Any]]:
    """The JSON "Definition:" blocks under one "##### ..." heading of push.md."""
    text = PUSH_MD.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    section = re.split(r"\n#{2,5} ", section, maxsplit=1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]


def _substitute(value: Any, user_id: str) -> Any:
    return json.loads(json.dumps(value).replace(json.dumps(USER_ID_PLACEHOLDER)[1:-1], user_id))


# --- the predefined rules, straight from the spec text --------------------------------


@pytest.mark.parametrize(
    ("kind", "heading"),
    [("override", "##### Default Override Rules"), ("underride", "##### Default Underride Rules")],
)
def test_default_rules_are_exactly_the_spec_definitions(kind: str, heading: str) -> None:
    expected = [_substitute(rule, ALICE) for rule in _spec_definitions(heading)]
    assert expected, "no definitions parsed from the spec"
    actual = [rule.to_json() for rule in default_rules(ALICE)[kind]]
    assert actual == expected


def test_default_rule_ids_and_order() -> None:
    rules = default_rules(ALICE)
    assert [rule.rule_id for rule in rules["override"]] == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]
    assert [rule.rule_id for rule in rules["underride"]] == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    # v1.17 removed the body-based defaults, the content rule among them.
    assert rules["content"] == rules["room"] == rules["sender"] == ()
    assert "Default Content Rules" not in PUSH_MD.read_text(encoding="utf-8")


def test_user_specific_defaults_carry_the_user_id() -> None:
    rules = {rule.rule_id: rule for rule in default_rules(BOB)["override"]}
    assert rules[".m.rule.invite_for_me"].conditions[2] == {
        "kind": "event_match",
        "key": "state_key",
        "pattern": BOB,
    }
    assert rules[".m.rule.is_user_mention"].conditions[0]["value"] == BOB


# --- merging ------------------------------------------------------------------------


def _user_rule(kind: str, rule_id: str, **fields: Any) -> PushRule:
    return PushRule(kind=kind, rule_id=rule_id, actions=("notify",), **fields)


def test_ruleset_order_master_then_user_overrides_then_defaults() -> None:
    ruleset = build_ruleset(
        ALICE,
        [
            _user_rule("override", "mine1"),
            _user_rule("override", "mine2"),
            _user_rule("underride", "low"),
            _user_rule("room", ROOM),
            _user_rule("sender", BOB),
            _user_rule("content", "cake", pattern="cake"),
        ],
    )
    body = ruleset.to_json()
    assert list(body) == list(KINDS)
    assert [rule["rule_id"] for rule in body["override"]][:4] == [
        MASTER_RULE_ID,
        "mine1",
        "mine2",
        ".m.rule.suppress_notices",
    ]
    assert [rule["rule_id"] for rule in body["underride"]][:2] == ["low", ".m.rule.call"]
    assert body["room"] == [
        {"rule_id": ROOM, "default": False, "enabled": True, "actions": ["notify"]}
    ]
    assert body["sender"] == [
        {"rule_id": BOB, "default": False, "enabled": True, "actions": ["notify"]}
    ]
    assert body["content"] == [
        {
            "rule_id": "cake",
            "default": False,
            "enabled": True,
            "actions": ["notify"],
            "pattern": "cake",
        }
    ]
    assert [rule.kind for rule in ruleset.in_priority_order()][:3] == ["override"] * 3


def test_default_overrides_apply() -> None:
    ruleset = build_ruleset(
        ALICE,
        [],
        {
            ("override", MASTER_RULE_ID): DefaultRuleOverride(enabled=True),
            ("underride", ".m.rule.message"): DefaultRuleOverride(actions=()),
        },
    )
    master = ruleset.get("override", MASTER_RULE_ID)
    message = ruleset.get("underride", ".m.rule.message")
    assert master is not None and master.enabled is True and master.default is True
    assert message is not None and message.actions == () and message.enabled is True
    assert ruleset.get("override", ".m.rule.message") is None


# --- validation ---------------------------------------------------------------------


def test_check_kind() -> None:
    for kind in KINDS:
        check_kind(kind)
    with pytest.raises(InvalidPushRule) as info:
        check_kind("global")
    assert info.value.errcode == "M_INVALID_PARAM"


@pytest.mark.parametrize("rule_id", ["", ".m.rule.mine", ".x", "a/b", "a\\b"])
def test_reserved_or_malformed_rule_ids_are_rejected(rule_id: str) -> None:
    with pytest.raises(InvalidPushRule) as info:
        check_new_rule_id(rule_id)
    assert info.value.errcode == "M_INVALID_PARAM"


def test_actions_validation_and_legacy_stripping() -> None:
    assert parse_actions(["notify", {"set_tweak": "sound", "value": "x"}]) == (
        "notify",
        {"set_tweak": "sound", "value": "x"},
    )
    assert parse_actions(["dont_notify"]) == ()
    assert parse_actions(["coalesce", "notify"]) == ("notify",)
    for bad in ("notify", None, ["ring"], [{"value": 1}], [{"set_tweak": 3}], [1]):
        with pytest.raises(InvalidPushRule):
            parse_actions(bad)


@pytest.mark.parametrize(
    "condition",
    [
        {"kind": "event_match", "key": "type", "pattern": "m.room.*"},
        {"kind": "event_property_is", "key": "content.x", "value": None},
        {"kind": "event_property_is", "key": "content.x", "value": 2**53 - 1},
        {"kind": "event_property_contains", "key": "content.x", "value": "v"},
        {"kind": "contains_display_name"},
        {"kind": "room_member_count", "is": "2"},
        {"kind": "room_member_count", "is": ">=10"},
        {"kind": "sender_notification_permission", "key": "room"},
        {"kind": "org.example.future", "anything": [1]},
    ],
)
def test_valid_conditions(condition: dict[str, Any]) -> None:
    assert parse_condition(condition) == condition


@pytest.mark.parametrize(
    "condition",
    [
        "event_match",
        {},
        {"kind": 1},
        {"kind": "event_match", "key": "type"},
        {"kind": "event_match", "pattern": "x"},
        {"kind": "event_property_is", "key": "content.x"},
        {"kind": "event_property_is", "key": "content.x", "value": [1]},
        {"kind": "event_property_is", "key": "content.x", "value": 1.5},
        {"kind": "event_property_is", "key": "content.x", "value": 2**53},
        {"kind": "event_property_contains", "key": 1, "value": 1},
        {"kind": "room_member_count"},
        {"kind": "room_member_count", "is": "=2"},
        {"kind": "room_member_count", "is": "two"},
        {"kind": "room_member_count", "is": 2},
        {"kind": "sender_notification_permission"},
    ],
)
def test_invalid_conditions(condition: Any) -> None:
    with pytest.raises(InvalidPushRule) as info:
        parse_condition(condition)
    assert info.value.errcode == "M_BAD_JSON"


def test_parse_rule_body_per_kind() -> None:
    override = parse_rule_body("override", "r", {"actions": ["notify"]})
    assert override.conditions == () and override.enabled and not override.default
    content = parse_rule_body("content", "c", {"actions": [], "pattern": "cake*lie"})
    assert content.pattern == "cake*lie"
    room = parse_rule_body("room", ROOM, {"actions": [], "conditions": "ignored"})
    assert room.conditions == () and room.pattern is None
    with pytest.raises(InvalidPushRule):
        parse_rule_body("content", "c", {"actions": []})
    with pytest.raises(InvalidPushRule):
        parse_rule_body("override", "r", {"conditions": []})
    with pytest.raises(InvalidPushRule):
        parse_rule_body("underride", "r", {"actions": [], "conditions": {}})


# --- before / after -----------------------------------------------------------------


def test_position_rule() -> None:
    assert position_rule([], "a") == ["a"]
    assert position_rule(["b", "c"], "a") == ["a", "b", "c"]  # new: most important
    assert position_rule(["b", "a", "c"], "a") == ["b", "a", "c"]  # update keeps its place
    assert position_rule(["b", "c"], "a", before="c") == ["b", "a", "c"]
    assert position_rule(["b", "c"], "a", after="b") == ["b", "a", "c"]
    assert position_rule(["b", "c"], "a", after="c") == ["b", "c", "a"]
    assert position_rule(["a", "b", "c"], "a", after="c") == ["b", "c", "a"]  # moves
    # Both given: `before` decides.
    assert position_rule(["b", "c"], "a", before="b", after="c") == ["a", "b", "c"]
    with pytest.raises(UnknownRelativeRule) as info:
        position_rule(["b"], "a", before="zzz")
    assert info.value.errcode == "M_UNKNOWN"
    assert str(info.value) == "before/after rule not found: zzz"
    with pytest.raises(InvalidPushRule):
        position_rule(["a"], "a", after="a")


# --- dotted paths and globs -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("content.body", ("content", "body")),
        ("content.m\\.relates_to.rel_type", ("content", "m.relates_to", "rel_type")),
        ("content.m\\\\foo", ("content", "m\\foo")),
        ("content.m\\x", ("content", "m\\x")),  # other escapes stay as they are
        ("a\\\\.b", ("a\\", "b")),
        ("type", ("type",)),
        ("a..b", ("a", "", "b")),
        ("trailing\\", ("trailing\\",)),
    ],
)
def test_split_property_path(key: str, path: tuple[str, ...]) -> None:
    assert split_property_path(key) == path


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        # The spec's event_match example: lunc?* against topics.
        ("lunc?*", "Lunch plans", True),
        ("lunc?*", "LUNCH", True),
        ("lunc?*", " lunch", False),
        ("lunc?*", "lunc", False),
        ("m.room.message", "m.room.message", True),
        ("m.room.message", "m.room.message2", False),
        ("m.room.*", "m.room.member", True),
        ("*", "", True),
        ("", "", True),
        ("", "x", False),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXbYY", False),
        ("???", "abc", True),
        ("???", "ab", False),
        ("[ab]", "[ab]", True),  # only * and ? are special
        ("a.c", "abc", False),
    ],
)
def test_glob_whole_value(pattern: str, value: str, expected: bool) -> None:
    assert glob_matches(pattern, value) is expected


@pytest.mark.parametrize(
    ("pattern", "body", "expected"),
    [
        # The spec's content.body example: ex*ple.
        ("ex*ple", "An example event.", True),
        ("ex*ple", "exple", True),
        ("ex*ple", "An exciting triple-whammy", True),
        ("cake", "I like cake!", True),
        ("cake", "CAKE", True),
        ("cake", "cakes", False),
        ("cake", "pancake", False),
        ("cake", "pan_cake", False),  # _ is a word character
        ("cake", "pan-cake", True),
        ("cake", "cake_", False),
        ("c?ke", "a coke please", True),
        ("alice", "hi @alice:example.org", True),
        ("cake*lie", "the cake is a lie", True),
        ("cake*lie", "the cake is a lier", False),
        ("*", "", True),
        ("caf", "café", True),  # é is not in [A-Za-z0-9_]: a boundary, per the spec
    ],
)
def test_glob_word_boundaries(pattern: str, body: str, expected: bool) -> None:
    assert glob_matches(pattern, body, word_boundaries=True) is expected


def _glob_regex(pattern: str, words: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if words:
        body = r"(?:^|(?<=[^A-Za-z0-9_]))" + body + r"(?=[^A-Za-z0-9_]|$)"
    return re.compile(body, re.DOTALL)


@given(
    pattern=st.text(alphabet="ab*?-", max_size=6),
    value=st.text(alphabet="abAB- _", max_size=12),
    words=st.booleans(),
)
def test_glob_agrees_with_a_regex_reference(pattern: str, value: str, words: bool) -> None:
    reference = _glob_regex(pattern.lower(), words)
    text = value.lower()
    expected = bool(reference.search(text) if words else reference.fullmatch(text))
    assert glob_matches(pattern, value, word_boundaries=words) is expected


def test_glob_is_linear_on_hostile_input() -> None:
    # A backtracking regex would take ages on this; the automaton does not.
    assert not glob_matches("a*a*a*a*a*a*a*a*b", "a" * 20_000, word_boundaries=True)
    assert not glob_matches("*a*a*a*a*a*a*a*b", "a" * 20_000)


# --- evaluation ---------------------------------------------------------------------

DEFAULTS = build_ruleset(ALICE, [])
SOUND = {"set_tweak": "sound", "value": "default"}
HIGHLIGHT = {"set_tweak": "highlight"}


def _message(body: str = "hello", **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": BOB,
        "room_id": ROOM,
        "event_id": "$e",
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def _eval(event: dict[str, Any], ruleset: Any = DEFAULTS, **context: Any) -> list[Any] | None:
    context.setdefault("room_member_count", 5)
    return evaluate(ruleset, event, **context)


def test_plain_message_in_a_group_notifies() -> None:
    assert _eval(_message()) == ["notify"]


def test_one_to_one_message_makes_a_sound() -> None:
    assert _eval(_message(), room_member_count=2) == ["notify", SOUND]
    assert _eval(_message(), room_member_count=3) == ["notify"]


def test_encrypted_events() -> None:
    encrypted = {"type": "m.room.encrypted", "sender": BOB, "room_id": ROOM, "content": {}}
    assert _eval(encrypted, room_member_count=2) == ["notify", SOUND]
    assert _eval(encrypted, room_member_count=10) == ["notify"]


def test_notices_are_suppressed() -> None:
    assert _eval(_message(msgtype="m.notice")) == []


def test_user_mention_highlights() -> None:
    event = _message("hi", **{"m.mentions": {"user_ids": [ALICE]}})
    assert _eval(event) == ["notify", SOUND, HIGHLIGHT]
    other = _message("hi", **{"m.mentions": {"user_ids": [BOB]}})
    assert _eval(other) == ["notify"]
    # Mentioning someone in the body alone no longer highlights (v1.17).
    assert _eval(_message("alice: hi")) == ["notify"]


def test_room_mention_needs_the_senders_power() -> None:
    event = _message("all", **{"m.mentions": {"room": True}})
    assert _eval(event, sender_power_level=50) == ["notify", HIGHLIGHT]
    assert _eval(event, sender_power_level=0) == ["notify"]
    assert _eval(event) == ["notify"]  # unknown power: no
    levels = {"room": 0}
    assert _eval(event, sender_power_level=0, notification_power_levels=levels) == [
        "notify",
        HIGHLIGHT,
    ]
    # "room": "true" (a string) is not true.
    stringly = _message("all", **{"m.mentions": {"room": "true"}})
    assert _eval(stringly, sender_power_level=100) == ["notify"]


def test_invite_for_me() -> None:
    invite = {
        "type": "m.room.member",
        "sender": BOB,
        "room_id": ROOM,
        "state_key": ALICE,
        "content": {"membership": "invite"},
    }
    assert _eval(invite) == ["notify", SOUND]
    assert _eval({**invite, "state_key": "@carol:example.org"}) == []  # member_event
    assert _eval({**invite, "content": {"membership": "join"}}) == []


def test_tombstone_needs_a_state_key() -> None:
    tombstone = {"type": "m.room.tombstone", "sender": BOB, "room_id": ROOM, "content": {}}
    assert _eval({**tombstone, "state_key": ""}) == ["notify", HIGHLIGHT]
    assert _eval(tombstone) is None


def test_reactions_edits_and_acls_are_silent() -> None:
    assert _eval({"type": "m.reaction", "sender": BOB, "content": {}}) == []
    edit = _message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}})
    assert _eval(edit) == []
    acl = {"type": "m.room.server_acl", "sender": BOB, "state_key": "", "content": {}}
    assert _eval(acl) == []


def test_call_invite_rings() -> None:
    call = {"type": "m.call.invite", "sender": BOB, "content": {}}
    assert _eval(call) == ["notify", {"set_tweak": "sound", "value": "ring"}]


def test_unmatched_event_gives_none() -> None:
    assert _eval({"type": "m.room.topic", "sender": BOB, "state_key": "", "content": {}}) is None


def test_master_rule() -> None:
    on = build_ruleset(ALICE, [], {("override", MASTER_RULE_ID): DefaultRuleOverride(enabled=True)})
    mention = _message("hi", **{"m.mentions": {"user_ids": [ALICE]}})
    assert _eval(mention, on) == []
    # User override rules come after the master rule.
    mine = parse_rule_body("override", "everything", {"actions": ["notify"]})
    assert _eval(_message(msgtype="m.notice"), build_ruleset(ALICE, [mine])) == ["notify"]
    assert (
        _eval(
            _message(),
            build_ruleset(
                ALICE, [mine], {("override", MASTER_RULE_ID): DefaultRuleOverride(enabled=True)}
            ),
        )
        == []
    )


def test_disabled_default_rule_falls_through() -> None:
    ruleset = build_ruleset(
        ALICE, [], {("override", ".m.rule.suppress_notices"): DefaultRuleOverride(enabled=False)}
    )
    assert _eval(_message(msgtype="m.notice"), ruleset) == ["notify"]


def test_room_sender_and_content_rules() -> None:
    ruleset = build_ruleset(
        ALICE,
        [
            PushRule("room", ROOM, ()),
            PushRule("sender", "@carol:example.org", ("notify", HIGHLIGHT)),
            PushRule(
                "content",
                "cake",
                ("notify", {"set_tweak": "sound", "value": "cake"}),
                pattern="cak?",
            ),
        ],
    )
    # content beats room.
    assert _eval(_message("cake time"), ruleset) == [
        "notify",
        {"set_tweak": "sound", "value": "cake"},
    ]
    assert _eval(_message("hello"), ruleset) == []  # room rule
    elsewhere = {**_message("hello"), "room_id": "!other:example.org"}
    assert _eval(elsewhere, ruleset) == ["notify"]
    from_carol = {**elsewhere, "sender": "@carol:example.org"}
    assert _eval(from_carol, ruleset) == ["notify", HIGHLIGHT]


def test_contains_display_name() -> None:
    rule = parse_rule_body(
        "override",
        "name",
        {"conditions": [{"kind": "contains_display_name"}], "actions": ["notify", HIGHLIGHT]},
    )
    ruleset = build_ruleset(ALICE, [rule])
    assert _eval(_message("Hey Alice Smith!"), ruleset, display_name="alice smith") == [
        "notify",
        HIGHLIGHT,
    ]
    assert _eval(_message("Hey Alice Smithers"), ruleset, display_name="Alice Smith") == ["notify"]
    assert _eval(_message("Hey Alice"), ruleset, display_name=None) == ["notify"]
    assert _eval(_message("Hey Alice"), ruleset, display_name="") == ["notify"]
    # The display name is literal: its * is not a wildcard.
    assert _eval(_message("hi al"), ruleset, display_name="a*") == ["notify"]
    assert _eval(_message("hi a* there"), ruleset, display_name="a*") == ["notify", HIGHLIGHT]


@pytest.mark.parametrize(
    ("is_", "count", "expected"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("<10", 9, True),
        ("<10", 10, False),
        ("<=10", 10, True),
        (">2", 3, True),
        (">2", 2, False),
        (">=2", 2, True),
        ("bogus", 2, False),
    ],
)
def test_room_member_count(is_: str, count: int, expected: bool) -> None:
    rule = PushRule(
        "override", "n", ("notify",), conditions=({"kind": "room_member_count", "is": is_},)
    )
    result = _eval(
        {"type": "x", "content": {}}, build_ruleset(ALICE, [rule]), room_member_count=count
    )
    assert (result == ["notify"]) is expected


def _property_rule(kind: str, key: str, value: Any) -> Any:
    rule = PushRule(
        "override", "p", ("notify",), conditions=({"kind": kind, "key": key, "value": value},)
    )
    return build_ruleset(ALICE, [rule])


@pytest.mark.parametrize(
    ("value", "content", "expected"),
    [
        (True, {"m.federate": True}, True),
        (True, {"m.federate": "true"}, False),  # the spec's examples: no casting
        (True, {"m.federate": 1}, False),
        (1, {"m.federate": True}, False),
        (1, {"m.federate": 1}, True),
        (None, {"m.federate": None}, True),
        (None, {}, False),  # absent is not null
        (False, {"m.federate": False}, True),
        ("x", {"m.federate": "X"}, False),  # exact, case-sensitive
        ("x", {"m.federate": ["x"]}, False),
        (0, {"m.federate": 0.0}, False),
    ],
)
def test_event_property_is(value: Any, content: dict[str, Any], expected: bool) -> None:
    ruleset = _property_rule("event_property_is", "content.m\\.federate", value)
    event = {"type": "m.room.create", "sender": BOB, "state_key": "", "content": content}
    assert (_eval(event, ruleset) == ["notify"]) is expected


def test_dotted_paths_need_escaped_dots() -> None:
    event = {"type": "x", "content": {"m.federate": True, "m": {"federate": False}}}
    assert _eval(event, _property_rule("event_property_is", "content.m\\.federate", True)) == [
        "notify"
    ]
    assert _eval(event, _property_rule("event_property_is", "content.m.federate", False)) == [
        "notify"
    ]
    assert _eval(event, _property_rule("event_property_is", "content.m.federate", True)) is None
    backslash = {"type": "x", "content": {"m\\foo": 1}}
    assert _eval(backslash, _property_rule("event_property_is", "content.m\\\\foo", 1)) == [
        "notify"
    ]


@pytest.mark.parametrize(
    ("value", "array", "expected"),
    [
        ("#myroom:example.com", ["#somewhere:example.org", "#myroom:example.com"], True),
        (":example.com", ["#myroom:example.com"], False),  # the spec's example
        (1, [True], False),
        (True, [1, True], True),
        (None, [None], True),
        ("a", "a", False),  # not an array
        ("a", [["a"], {"a": 1}], False),
    ],
)
def test_event_property_contains(value: Any, array: Any, expected: bool) -> None:
    ruleset = _property_rule("event_property_contains", "content.alt_aliases", value)
    event = {"type": "m.room.canonical_alias", "content": {"alt_aliases": array}}
    assert (_eval(event, ruleset) == ["notify"]) is expected


def test_event_match_needs_a_string_value() -> None:
    rule = PushRule(
        "override",
        "t",
        ("notify",),
        conditions=({"kind": "event_match", "key": "content.topic", "pattern": "*"},),
    )
    ruleset = build_ruleset(ALICE, [rule])
    assert _eval({"type": "x", "content": {"topic": ""}}, ruleset) == ["notify"]
    assert _eval({"type": "x", "content": {"topic": None}}, ruleset) is None
    assert _eval({"type": "x", "content": {"topic": 5}}, ruleset) is None
    assert _eval({"type": "x", "content": {}}, ruleset) is None


def test_unknown_condition_kind_never_matches() -> None:
    rule = PushRule("override", "u", ("notify",), conditions=({"kind": "org.example.new"},))
    assert _eval({"type": "x", "content": {}}, build_ruleset(ALICE, [rule])) is None


def test_legacy_actions_are_stripped_at_evaluation() -> None:
    rule = PushRule("override", "old", ("dont_notify",))
    assert _eval({"type": "x", "content": {}}, build_ruleset(ALICE, [rule])) == []


def test_interpret_actions() -> None:
    assert interpret_actions(None) == interpret_actions([])
    assert not interpret_actions([]).notify
    loud = interpret_actions(["notify", SOUND, HIGHLIGHT])
    assert loud.notify and loud.highlight and loud.tweaks == {"sound": "default", "highlight": True}
    quiet = interpret_actions(["notify", {"set_tweak": "highlight", "value": False}])
    assert quiet.notify and not quiet.highlight
    assert not interpret_actions([HIGHLIGHT]).highlight  # no notify, no highlight
