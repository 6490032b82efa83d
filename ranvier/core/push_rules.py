"""Push rules as data, and their evaluation against an event.

Client-Server API v1.19, "Push Rules", "Predefined Rules" and appendices
"Glob-style matching" / "Dot-separated property paths". Pure functions over
plain JSON-like data: the storage and the endpoints live elsewhere.

A user's ruleset is the server-default rules (with the user's own
``enabled``/``actions`` overrides) merged with the user's own rules. Rules are
checked kind by kind in the order of :data:`KINDS`; within a kind, user-defined
rules come before server-default ones, except ``.m.rule.master``, which is
checked before everything ("Predefined Rules"). The first enabled rule whose
conditions all hold decides the actions.

The caller must not evaluate a user's rules against events the user sent
("Homeservers MUST NOT notify the Push Gateway for events that the user has
sent themselves").
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from ranvier.core.property_paths import split_property_path

JsonDict = dict[str, Any]

#: The kinds of rule, in the order they are checked ("Push Rules").
KINDS: Final = ("override", "content", "room", "sender", "underride")

MASTER_RULE_ID: Final = ".m.rule.master"

#: "Historical Actions": clients and servers MUST ignore these, e.g. by stripping them.
LEGACY_ACTIONS: Final = frozenset({"dont_notify", "coalesce"})

#: Condition kinds this server understands; others never match ("Conditions").
KNOWN_CONDITION_KINDS: Final = frozenset(
    {
        "event_match",
        "event_property_is",
        "event_property_contains",
        "contains_display_name",
        "room_member_count",
        "sender_notification_permission",
        # MSC3664 (unstable): conditions on the event this one relates to.
        "im.nheko.msc3664.related_event_match",
    }
)

#: MSC3664's unstable condition kind (Element asks for it as an unstable feature).
RELATED_EVENT_MATCH: Final = "im.nheko.msc3664.related_event_match"

#: Canonical JSON integers: [-(2**53)+1, (2**53)-1] (appendices, "Canonical JSON").
_MAX_SAFE_INT: Final = 2**53 - 1

#: ``sender_notification_permission`` when the power levels name no level for
#: the key: 50 is the spec's default for ``notifications.room`` (m.room.power_levels);
#: Synapse uses it for every key.
DEFAULT_NOTIFICATION_POWER_LEVEL: Final = 50


class InvalidPushRule(ValueError):
    """A rule, its body or its position is not acceptable; ``errcode`` is for the client."""

    def __init__(self, message: str, errcode: str = "M_BAD_JSON") -> None:
        super().__init__(message)
        self.errcode = errcode


class UnknownRelativeRule(InvalidPushRule):
    """``before``/``after`` names no user-defined rule of that kind."""

    def __init__(self, rule_id: str) -> None:
        # The spec's example error for this case (pushrules.yaml, setPushRule, 400).
        super().__init__(f"before/after rule not found: {rule_id}", "M_UNKNOWN")


@dataclass(frozen=True, slots=True)
class PushRule:
    """One rule of one kind. ``conditions`` is for override/underride, ``pattern`` for content."""

    kind: str
    rule_id: str
    actions: tuple[Any, ...]
    enabled: bool = True
    default: bool = False
    conditions: tuple[JsonDict, ...] = ()
    pattern: str | None = None

    def to_json(self) -> JsonDict:
        """The rule as the API shows it (definitions/push_rule.yaml)."""
        body: JsonDict = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": list(self.actions),
        }
        if self.kind in ("override", "underride"):
            body["conditions"] = list(self.conditions)
        elif self.kind == "content":
            body["pattern"] = self.pattern
        return body


@dataclass(frozen=True, slots=True)
class DefaultRuleOverride:
    """A user's changes to a server-default rule; None keeps the default."""

    enabled: bool | None = None
    actions: tuple[Any, ...] | None = None


# --- the predefined rules ---------------------------------------------------------

#: The spec writes the owner's user ID into some definitions as this text.
USER_ID_PLACEHOLDER: Final = "[the user's Matrix ID]"

_SOUND_DEFAULT: Final[JsonDict] = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT: Final[JsonDict] = {"set_tweak": "highlight"}


def _type_is(event_type: str) -> JsonDict:
    return {"kind": "event_match", "key": "type", "pattern": event_type}


_STATE_KEY_EMPTY: Final[JsonDict] = {"kind": "event_match", "key": "state_key", "pattern": ""}

# "Default Override Rules", in the spec's order. (v1.17 removed the legacy
# body-based mention rules: .m.rule.contains_display_name, .m.rule.roomnotif and
# the content rule .m.rule.contains_user_name.)
_DEFAULT_OVERRIDE: Final[tuple[tuple[str, bool, list[JsonDict], list[Any]], ...]] = (
    (MASTER_RULE_ID, False, [], []),
    (
        ".m.rule.suppress_notices",
        True,
        [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}],
        [],
    ),
    (
        ".m.rule.invite_for_me",
        True,
        [
            _type_is("m.room.member"),
            {"kind": "event_match", "key": "content.membership", "pattern": "invite"},
            {"kind": "event_match", "key": "state_key", "pattern": USER_ID_PLACEHOLDER},
        ],
        ["notify", _SOUND_DEFAULT],
    ),
    (".m.rule.member_event", True, [_type_is("m.room.member")], []),
    (
        # v1.7, MSC3952 intentional mentions.
        ".m.rule.is_user_mention",
        True,
        [
            {
                "kind": "event_property_contains",
                "key": "content.m\\.mentions.user_ids",
                "value": USER_ID_PLACEHOLDER,
            }
        ],
        ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
    ),
    (
        ".m.rule.is_room_mention",
        True,
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    (
        ".m.rule.tombstone",
        True,
        [_type_is("m.room.tombstone"), _STATE_KEY_EMPTY],
        ["notify", _HIGHLIGHT],
    ),
    (".m.rule.reaction", True, [_type_is("m.reaction")], []),
    (".m.rule.room.server_acl", True, [_type_is("m.room.server_acl"), _STATE_KEY_EMPTY], []),
    (
        # v1.9, MSC3958.
        ".m.rule.suppress_edits",
        True,
        [
            {
                "kind": "event_property_is",
                "key": "content.m\\.relates_to.rel_type",
                "value": "m.replace",
            }
        ],
        [],
    ),
)

_ONE_TO_ONE: Final[JsonDict] = {"kind": "room_member_count", "is": "2"}

# "Default Underride Rules", in the spec's order.
_DEFAULT_UNDERRIDE: Final[tuple[tuple[str, bool, list[JsonDict], list[Any]], ...]] = (
    (
        ".m.rule.call",
        True,
        [_type_is("m.call.invite")],
        ["notify", {"set_tweak": "sound", "value": "ring"}],
    ),
    (
        ".m.rule.encrypted_room_one_to_one",
        True,
        [_ONE_TO_ONE, _type_is("m.room.encrypted")],
        ["notify", _SOUND_DEFAULT],
    ),
    (
        ".m.rule.room_one_to_one",
        True,
        [_ONE_TO_ONE, _type_is("m.room.message")],
        ["notify", _SOUND_DEFAULT],
    ),
    (".m.rule.message", True, [_type_is("m.room.message")], ["notify"]),
    (".m.rule.encrypted", True, [_type_is("m.room.encrypted")], ["notify"]),
)


def _substitute(value: Any, user_id: str) -> Any:
    if value == USER_ID_PLACEHOLDER:
        return user_id
    if isinstance(value, dict):
        return {key: _substitute(item, user_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, user_id) for item in value]
    return value


def default_rules(user_id: str) -> dict[str, tuple[PushRule, ...]]:
    """The server-default rules of ``user_id``, per kind, in the spec's order."""

    def build(
        kind: str, table: Iterable[tuple[str, bool, list[JsonDict], list[Any]]]
    ) -> tuple[PushRule, ...]:
        return tuple(
            PushRule(
                kind=kind,
                rule_id=rule_id,
                actions=tuple(_substitute(actions, user_id)),
                enabled=enabled,
                default=True,
                conditions=tuple(_substitute(conditions, user_id)),
            )
            for rule_id, enabled, conditions, actions in table
        )

    return {
        "override": build("override", _DEFAULT_OVERRIDE),
        "content": (),
        "room": (),
        "sender": (),
        "underride": build("underride", _DEFAULT_UNDERRIDE),
    }


def is_server_default_rule_id(rule_id: str) -> bool:
    """Server-default rule IDs start with a dot ("Predefined Rules")."""
    return rule_id.startswith(".")


# --- a user's ruleset -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ruleset:
    """A user's rules per kind, each tuple in priority order (most important first)."""

    rules: Mapping[str, tuple[PushRule, ...]]

    def to_json(self) -> JsonDict:
        """The ``global`` ruleset (definitions/push_ruleset.yaml)."""
        return {kind: [rule.to_json() for rule in self.rules[kind]] for kind in KINDS}

    def get(self, kind: str, rule_id: str) -> PushRule | None:
        for rule in self.rules.get(kind, ()):
            if rule.rule_id == rule_id:
                return rule
        return None

    def in_priority_order(self) -> Iterator[PushRule]:
        for kind in KINDS:
            yield from self.rules[kind]


def build_ruleset(
    user_id: str,
    user_rules: Iterable[PushRule],
    default_overrides: Mapping[tuple[str, str], DefaultRuleOverride] | None = None,
) -> Ruleset:
    """Merge the server defaults (with the user's overrides) and the user's own rules.

    ``user_rules`` are in priority order within each kind. ``default_overrides``
    is keyed by ``(kind, rule_id)``.
    """
    overrides = default_overrides or {}
    defaults = default_rules(user_id)
    mine: dict[str, list[PushRule]] = {kind: [] for kind in KINDS}
    for rule in user_rules:
        mine[rule.kind].append(rule)

    merged: dict[str, tuple[PushRule, ...]] = {}
    for kind in KINDS:
        server = [
            _apply_override(rule, overrides.get((kind, rule.rule_id))) for rule in defaults[kind]
        ]
        # "Predefined Rules": server-default rules rank below user-defined ones,
        # except .m.rule.master, which always ranks above every other rule.
        first = [rule for rule in server if rule.rule_id == MASTER_RULE_ID]
        rest = [rule for rule in server if rule.rule_id != MASTER_RULE_ID]
        merged[kind] = (*first, *mine[kind], *rest)
    return Ruleset(merged)


def _apply_override(rule: PushRule, override: DefaultRuleOverride | None) -> PushRule:
    if override is None:
        return rule
    return replace(
        rule,
        enabled=rule.enabled if override.enabled is None else override.enabled,
        actions=rule.actions if override.actions is None else override.actions,
    )


def position_rule(
    existing: Sequence[str], rule_id: str, *, before: str | None = None, after: str | None = None
) -> list[str]:
    """The new priority order of a kind's user-defined rule IDs after a PUT of ``rule_id``.

    setPushRule: with ``before`` the rule becomes the next more important rule
    than ``before`` (``before`` wins when both are given); with ``after`` the
    next less important one than ``after``. Both must name a user-defined rule
    of the kind (not a server-default one). Without either, a new rule becomes
    the most important user-defined rule and an existing one keeps its place.
    """
    anchor = before if before is not None else after
    if anchor is not None and anchor == rule_id:
        raise InvalidPushRule("A rule cannot be placed relative to itself", "M_INVALID_PARAM")
    if anchor is None:
        return list(existing) if rule_id in existing else [rule_id, *existing]
    order = [other for other in existing if other != rule_id]
    if anchor not in order:
        raise UnknownRelativeRule(anchor)
    index = order.index(anchor)
    order.insert(index if before is not None else index + 1, rule_id)
    return order


# --- validation of request bodies -------------------------------------------------


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidPushRule(f"Unknown push rule kind {kind!r}", "M_INVALID_PARAM")


def check_new_rule_id(rule_id: str) -> None:
    """setPushRule's ``ruleId``: not empty, no slashes, and no leading dot (reserved)."""
    if not rule_id:
        raise InvalidPushRule("The rule ID must not be empty", "M_INVALID_PARAM")
    if "/" in rule_id or "\\" in rule_id:
        raise InvalidPushRule("Rule IDs may not contain slashes", "M_INVALID_PARAM")
    if "\x00" in rule_id:
        raise InvalidPushRule("Rule IDs may not contain NUL characters", "M_INVALID_PARAM")
    if is_server_default_rule_id(rule_id):
        raise InvalidPushRule(
            "Rule IDs starting with '.' are reserved for server-default rules", "M_INVALID_PARAM"
        )


def _is_legacy(action: object) -> bool:
    return isinstance(action, str) and action in LEGACY_ACTIONS


def parse_actions(value: object) -> tuple[Any, ...]:
    """Check an ``actions`` array; legacy ``dont_notify``/``coalesce`` are stripped."""
    if not isinstance(value, list):
        raise InvalidPushRule("'actions' must be an array")
    actions: list[Any] = []
    for action in value:
        if _is_legacy(action):
            continue  # "Historical Actions": MUST be ignored
        if action == "notify" or (
            isinstance(action, dict) and isinstance(action.get("set_tweak"), str)
        ):
            actions.append(action)
        else:
            raise InvalidPushRule(f"Unrecognised action {action!r}")
    return tuple(actions)


_MEMBER_COUNT_RE: Final = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


def _is_scalar(value: object) -> bool:
    """A non-compound canonical JSON value (event_property_is / _contains)."""
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def parse_condition(value: object) -> JsonDict:
    """Check one condition (definitions/push_condition.yaml).

    Known kinds must carry their parameters. Unknown kinds are kept: the spec
    says they never match, which lets clients store conditions from newer
    versions or MSCs.
    """
    if not isinstance(value, dict):
        raise InvalidPushRule("Each condition must be an object")
    kind = value.get("kind")
    if not isinstance(kind, str):
        raise InvalidPushRule("Each condition needs a string 'kind'")
    needs_key = ("event_match", "event_property_is", "event_property_contains")
    if kind in needs_key and not isinstance(value.get("key"), str):
        raise InvalidPushRule(f"A {kind} condition needs a string 'key'")
    if kind == "event_match" and not isinstance(value.get("pattern"), str):
        raise InvalidPushRule("An event_match condition needs a string 'pattern'")
    if kind in ("event_property_is", "event_property_contains") and (
        "value" not in value or not _is_scalar(value["value"])
    ):
        raise InvalidPushRule(
            f"A {kind} condition needs a 'value': a string, an integer, a boolean or null"
        )
    if kind == "room_member_count":
        is_ = value.get("is")
        if not isinstance(is_, str) or not _MEMBER_COUNT_RE.match(is_):
            raise InvalidPushRule(
                "A room_member_count condition needs 'is': a number, optionally "
                "prefixed by ==, <, >, <= or >="
            )
    if kind == "sender_notification_permission" and not isinstance(value.get("key"), str):
        raise InvalidPushRule("A sender_notification_permission condition needs a string 'key'")
    if kind == RELATED_EVENT_MATCH and not isinstance(value.get("rel_type"), str):
        raise InvalidPushRule(f"A {kind} condition needs a string 'rel_type'")
    return value


def parse_rule_body(kind: str, rule_id: str, body: Mapping[str, Any]) -> PushRule:
    """A user-defined rule from a setPushRule request body (enabled, as the spec requires)."""
    check_kind(kind)
    if "actions" not in body:
        raise InvalidPushRule("Missing 'actions'")
    actions = parse_actions(body["actions"])
    conditions: tuple[JsonDict, ...] = ()
    pattern: str | None = None
    if kind in ("override", "underride"):
        # "A rule with no conditions always matches": conditions are optional.
        raw = body.get("conditions", [])
        if not isinstance(raw, list):
            raise InvalidPushRule("'conditions' must be an array")
        conditions = tuple(parse_condition(condition) for condition in raw)
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise InvalidPushRule("A content rule needs a string 'pattern'")
        if "\x00" in pattern:
            raise InvalidPushRule("'pattern' may not contain NUL characters")
    return PushRule(
        kind=kind,
        rule_id=rule_id,
        actions=actions,
        enabled=True,
        default=False,
        conditions=conditions,
        pattern=pattern,
    )


# --- dot-separated property paths ------------------------------------------------


_MISSING: Final = object()


def lookup_property(event: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at ``path`` in ``event``, or :data:`_MISSING` when absent."""
    value: Any = event
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            return _MISSING
        value = value[name]
    return value


# --- glob matching ------------------------------------------------------------------


def _is_word_char(char: str) -> bool:
    # "A word boundary is ... any character not in the sets [A-Z], [a-z], [0-9] or _."
    return char == "_" or ("0" <= char <= "9") or ("a" <= char <= "z") or ("A" <= char <= "Z")


def _at_start_boundary(text: str, position: int) -> bool:
    return position == 0 or not _is_word_char(text[position - 1])


def _at_end_boundary(text: str, position: int) -> bool:
    return position == len(text) or not _is_word_char(text[position])


def _literal_word_match(text: str, needle: str) -> bool:
    """``needle`` occurs in ``text`` starting and ending at word boundaries."""
    start = text.find(needle)
    while start != -1:
        if _at_start_boundary(text, start) and _at_end_boundary(text, start + len(needle)):
            return True
        start = text.find(needle, start + 1)
    return False


@dataclass(frozen=True, slots=True)
class _GlobAutomaton:
    """A glob (``*`` any run, ``?`` one character) as a bit-parallel NFA.

    Bit i set means "matched the first i tokens". Linear in the text for a
    fixed pattern, whatever the pattern: a regex with several ``.*`` could
    backtrack for a very long time on a hostile body.
    """

    length: int
    star_mask: int
    any_mask: int
    literal_masks: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def compile(cls, pattern: str) -> _GlobAutomaton:
        tokens: list[str] = []
        for char in pattern:
            if char == "*" and tokens and tokens[-1] == "*":
                continue  # "**" is "*"
            tokens.append(char)
        star_mask = any_mask = 0
        literal_masks: dict[str, int] = {}
        for index, token in enumerate(tokens):
            bit = 1 << index
            if token == "*":
                star_mask |= bit
            elif token == "?":
                any_mask |= bit
            else:
                literal_masks[token] = literal_masks.get(token, 0) | bit
        return cls(len(tokens), star_mask, any_mask, literal_masks)

    def _closure(self, states: int) -> int:
        # A star may match nothing. Consecutive stars were merged, so one shift suffices.
        return states | ((states & self.star_mask) << 1)

    def _step(self, states: int, char: str) -> int:
        advanced = (states & (self.any_mask | self.literal_masks.get(char, 0))) << 1
        return self._closure((states & self.star_mask) | advanced)

    def full_match(self, text: str) -> bool:
        accept = 1 << self.length
        states = self._closure(1)
        for char in text:
            states = self._step(states, char)
            if not states:
                return False
        return bool(states & accept)

    def word_match(self, text: str) -> bool:
        accept = 1 << self.length
        start = self._closure(1)
        states = 0
        for position in range(len(text) + 1):
            if _at_start_boundary(text, position):
                states |= start
            if states & accept and _at_end_boundary(text, position):
                return True
            if position < len(text):
                states = self._step(states, text[position])
        return False


@functools.lru_cache(maxsize=4096)
def _glob_matcher(pattern: str, words: bool) -> Callable[[str], bool]:
    """A case-insensitive matcher (both sides lower-cased) for ``pattern``."""
    lowered = pattern.lower()
    if "*" not in lowered and "?" not in lowered:
        if words:
            return lambda text: _literal_word_match(text.lower(), lowered)
        return lambda text: text.lower() == lowered
    automaton = _GlobAutomaton.compile(lowered)
    if words:
        return lambda text: automaton.word_match(text.lower())
    return lambda text: automaton.full_match(text.lower())


def glob_matches(pattern: str, value: str, *, word_boundaries: bool = False) -> bool:
    """Appendices, "Glob-style matching", case-insensitively.

    Without ``word_boundaries`` the pattern must match the whole value; with
    it, any substring that starts and ends at a word boundary (the rule for
    ``content.body``).
    """
    return _glob_matcher(pattern, word_boundaries)(value)


# --- evaluation ---------------------------------------------------------------------

_BODY_PATH: Final = ("content", "body")


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """What conditions need beyond the event itself."""

    #: Joined members of the room (room_member_count).
    room_member_count: int
    #: The rule owner's display name in the room (contains_display_name).
    display_name: str | None = None
    #: The sender's power level in the room (sender_notification_permission).
    sender_power_level: int | None = None
    #: ``content.notifications`` of the room's m.room.power_levels.
    notification_power_levels: Mapping[str, int] = field(default_factory=dict)
    #: MSC3664: the events this one relates to, by relation type (``m.in_reply_to``
    #: for a reply), for ``related_event_match``.
    related_events: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Relation types of :attr:`related_events` that are only fallbacks (a reply
    #: fallback in a thread: ``m.relates_to.is_falling_back``).
    fallback_relations: frozenset[str] = frozenset()


def _same_scalar(left: Any, right: Any) -> bool:
    # "The match is performed exactly": no casting, so true != 1 and "1" != 1.
    return type(left) is type(right) and left == right and _is_scalar(left)


def _member_count_matches(spec: str, count: int) -> bool:
    match = _MEMBER_COUNT_RE.match(spec)
    if match is None:
        return False
    operator, number = match.group(1) or "==", int(match.group(2))
    if operator == "==":
        return count == number
    if operator == "<":
        return count < number
    if operator == ">":
        return count > number
    if operator == "<=":
        return count <= number
    return count >= number


def condition_matches(
    condition: Mapping[str, Any], event: Mapping[str, Any], context: EvaluationContext
) -> bool:
    """Whether one condition holds for ``event`` ("Conditions"); unknown kinds never do."""
    kind = condition.get("kind")
    if kind == "event_match":
        key, pattern = condition.get("key"), condition.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        path = split_property_path(key)
        value = lookup_property(event, path)
        if not isinstance(value, str):
            return False  # absent or not a string: no match, even for "*"
        return glob_matches(pattern, value, word_boundaries=path == _BODY_PATH)
    if kind == "event_property_is":
        key = condition.get("key")
        if not isinstance(key, str) or "value" not in condition:
            return False
        value = lookup_property(event, split_property_path(key))
        return value is not _MISSING and _same_scalar(value, condition["value"])
    if kind == "event_property_contains":
        key = condition.get("key")
        if not isinstance(key, str) or "value" not in condition:
            return False
        value = lookup_property(event, split_property_path(key))
        if not isinstance(value, list):
            return False
        wanted = condition["value"]
        return any(_same_scalar(item, wanted) for item in value)
    if kind == "contains_display_name":
        # Deprecated since v1.17, still defined. The display name is matched
        # literally (its * or ? are not wildcards), at word boundaries.
        body = lookup_property(event, _BODY_PATH)
        name = context.display_name
        if not isinstance(body, str) or not name:
            return False
        return _literal_word_match(body.lower(), name.lower())
    if kind == "room_member_count":
        spec = condition.get("is")
        return isinstance(spec, str) and _member_count_matches(spec, context.room_member_count)
    if kind == RELATED_EVENT_MATCH:
        return _related_event_matches(condition, context)
    if kind == "sender_notification_permission":
        key = condition.get("key")
        if not isinstance(key, str) or context.sender_power_level is None:
            return False
        required = context.notification_power_levels.get(key, DEFAULT_NOTIFICATION_POWER_LEVEL)
        return context.sender_power_level >= required
    return False


def _related_event_matches(condition: Mapping[str, Any], context: EvaluationContext) -> bool:
    """MSC3664: the event relates with ``rel_type`` to an event whose ``key``
    matches ``pattern`` (both optional: without them, any such relation
    matches). Fallback relations count only with ``include_fallbacks: true``."""
    rel_type = condition.get("rel_type")
    if not isinstance(rel_type, str):
        return False
    related = context.related_events.get(rel_type)
    if related is None:
        return False
    if rel_type in context.fallback_relations and condition.get("include_fallbacks") is not True:
        return False
    key, pattern = condition.get("key"), condition.get("pattern")
    if key is None and pattern is None:
        return True
    if not isinstance(key, str) or not isinstance(pattern, str):
        return False
    value = lookup_property(related, split_property_path(key))
    return isinstance(value, str) and glob_matches(pattern, value)


def rule_matches(rule: PushRule, event: Mapping[str, Any], context: EvaluationContext) -> bool:
    """Whether an enabled ``rule`` applies to ``event``."""
    if not rule.enabled:
        return False
    if rule.kind == "room":
        return event.get("room_id") == rule.rule_id
    if rule.kind == "sender":
        return event.get("sender") == rule.rule_id
    if rule.kind == "content":
        body = lookup_property(event, _BODY_PATH)
        return (
            isinstance(body, str)
            and rule.pattern is not None
            and glob_matches(rule.pattern, body, word_boundaries=True)
        )
    return all(condition_matches(condition, event, context) for condition in rule.conditions)


def first_matching_rule(
    ruleset: Ruleset, event: Mapping[str, Any], context: EvaluationContext
) -> PushRule | None:
    """The highest-priority enabled rule that matches ``event``, or None."""
    for rule in ruleset.in_priority_order():
        if rule_matches(rule, event, context):
            return rule
    return None


def _actions_of(
    ruleset: Ruleset, event: Mapping[str, Any], context: EvaluationContext
) -> list[Any] | None:
    rule = first_matching_rule(ruleset, event, context)
    if rule is None:
        return None
    return [action for action in rule.actions if not _is_legacy(action)]


def evaluate(
    ruleset: Ruleset,
    event: Mapping[str, Any],
    *,
    room_member_count: int,
    display_name: str | None = None,
    sender_power_level: int | None = None,
    notification_power_levels: Mapping[str, int] | None = None,
) -> list[Any] | None:
    """The actions of the rule that decides ``event``, or None when no rule matches.

    Legacy actions are stripped ("Historical Actions"); an empty list means
    "matched, do not notify".
    """
    context = EvaluationContext(
        room_member_count=room_member_count,
        display_name=display_name,
        sender_power_level=sender_power_level,
        notification_power_levels=notification_power_levels or {},
    )
    return _actions_of(ruleset, event, context)


# --- evaluation for every member of a room ------------------------------------------

#: The owner written into a shared ruleset (see :class:`UserRules`). Not a
#: valid user ID; an event naming it is evaluated user by user.
_TEMPLATE_USER_ID: Final = "@\x00template:\x00"

_CONTENT_MENTIONS_PATH: Final = ("content", "m.mentions", "user_ids")


@dataclass(frozen=True, slots=True)
class UserRules:
    """A user's ruleset, prepared for evaluation against a room's worth of members.

    Users without rules of their own differ from each other only through the
    owner's ID written into two default rules (``.m.rule.invite_for_me``'s
    state_key, ``.m.rule.is_user_mention``'s mentions). For an event naming
    none of them, one evaluation of a ruleset owned by nobody (``template``),
    shared by every user with the same ``template_key`` (the same changes to the
    defaults), gives each of them their answer: a message into a 1,000-member
    room costs one evaluation, not 1,000.

    Such a user's own ruleset is built only when an event names them
    (:attr:`ruleset`), and the template is one object per ``template_key``: a
    server keeps one of these per user who receives events, and a whole
    ruleset each cost ~15 KiB (30 MiB at 2,000 users in bench scenario 14).
    """

    owner: str
    #: The merged ruleset of a user with rules of their own; None without.
    own: Ruleset | None
    #: Equal for users whose rules differ only by owner; None with own rules.
    template_key: str | None
    template: Ruleset | None
    #: The owner's changes to the server-default rules (without own rules).
    default_overrides: Mapping[tuple[str, str], DefaultRuleOverride]
    #: Some enabled rule has a contains_display_name condition.
    uses_display_name: bool

    @property
    def ruleset(self) -> Ruleset:
        """The owner's whole ruleset (built anew for a user without own rules)."""
        if self.own is not None:
            return self.own
        return build_ruleset(self.owner, (), self.default_overrides)


def prepare_user_rules(
    user_id: str,
    user_rules: Sequence[PushRule],
    default_overrides: Mapping[tuple[str, str], DefaultRuleOverride] | None = None,
) -> UserRules:
    overrides = default_overrides or {}
    if user_rules:
        ruleset = build_ruleset(user_id, user_rules, overrides)
        uses_display_name = any(
            rule.enabled and any(c.get("kind") == "contains_display_name" for c in rule.conditions)
            for rule in ruleset.in_priority_order()
        )
        return UserRules(user_id, ruleset, None, None, {}, uses_display_name)
    key = json.dumps(
        sorted(
            [kind, rule_id, override.enabled, override.actions]
            for (kind, rule_id), override in overrides.items()
        ),
        sort_keys=True,
        default=list,
    )
    # The default rules have no contains_display_name condition.
    return UserRules(user_id, None, key, _template(key), dict(overrides), False)


@functools.lru_cache(maxsize=256)
def _template(key: str) -> Ruleset:
    """The ruleset owned by nobody for these changes to the defaults (``key``, as
    :func:`prepare_user_rules` writes it): one object for all the users who share it."""
    overrides = {
        (kind, rule_id): DefaultRuleOverride(
            enabled=enabled, actions=None if actions is None else tuple(actions)
        )
        for kind, rule_id, enabled, actions in json.loads(key)
    }
    return build_ruleset(_TEMPLATE_USER_ID, (), overrides)


def _names_in_event(event: Mapping[str, Any]) -> frozenset[str]:
    """Lower-cased strings where the default rules look for their owner's ID
    (event_match is case-insensitive, hence lower case)."""
    names: set[str] = set()
    state_key = event.get("state_key")
    if isinstance(state_key, str):
        names.add(state_key.lower())
    mentioned = lookup_property(event, _CONTENT_MENTIONS_PATH)
    if isinstance(mentioned, list):
        names.update(item.lower() for item in mentioned if isinstance(item, str))
    return frozenset(names)


def evaluate_for_users(
    users: Mapping[str, UserRules],
    event: Mapping[str, Any],
    context: EvaluationContext,
    display_names: Mapping[str, str] | None = None,
) -> dict[str, list[Any] | None]:
    """The actions for each user (see :func:`evaluate`); ``context``'s
    ``display_name`` is ignored, each user's is taken from ``display_names``.

    Users answered by one shared evaluation get the same list object (callers
    may group by identity; none may mutate it)."""
    names = _names_in_event(event)
    template_named = _TEMPLATE_USER_ID.lower() in names
    shared: dict[str, list[Any] | None] = {}
    results: dict[str, list[Any] | None] = {}
    for user_id, rules in users.items():
        key = rules.template_key
        if (
            key is not None
            and rules.template is not None
            and not template_named
            and user_id.lower() not in names
            and "*" not in user_id
            and "?" not in user_id
        ):
            if key not in shared:
                shared[key] = _actions_of(rules.template, event, context)
            results[user_id] = shared[key]  # the same object for the whole group
            continue
        own_context = context
        if rules.uses_display_name:
            own_context = replace(context, display_name=(display_names or {}).get(user_id))
        results[user_id] = _actions_of(rules.ruleset, event, own_context)
    return results


@dataclass(frozen=True, slots=True)
class Notification:
    """What a list of actions means for counting and pushing."""

    notify: bool
    highlight: bool
    tweaks: Mapping[str, Any]


def interpret_actions(actions: Sequence[Any] | None) -> Notification:
    """``notify`` present → a notification; the ``highlight`` tweak with no value
    means true, absent means false ("Actions", ``set_tweak``)."""
    tweaks: dict[str, Any] = {}
    notify = False
    for action in actions or ():
        if action == "notify":
            notify = True
        elif isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            name = action["set_tweak"]
            tweaks[name] = action.get("value", True) if name == "highlight" else action.get("value")
    highlight = tweaks.get("highlight") is True
    return Notification(notify=notify, highlight=notify and highlight, tweaks=tweaks)
