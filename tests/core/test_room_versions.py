"""Room versions 1–12 (spec: content/rooms/_index.md and rooms/v1.md … v12.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ranvier.core.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    EventIdFormat,
    RedactionRules,
    RoomVersion,
    StateResAlgorithm,
    UnknownRoomVersion,
    get_room_version,
)

ALL = [str(n) for n in range(1, 13)]


def _versions_with(flag: str) -> list[int]:
    return [int(v) for v in ALL if getattr(KNOWN_ROOM_VERSIONS[v], flag)]


def test_versions_1_to_12_are_known_and_stable() -> None:
    assert list(KNOWN_ROOM_VERSIONS) == ALL
    for identifier, version in KNOWN_ROOM_VERSIONS.items():
        assert version.identifier == identifier
        assert version.stable  # "_index.md": every version 1–12 is **Stable**.
        assert get_room_version(identifier) is version


def test_default_is_version_12() -> None:
    # "Servers SHOULD use **room version 12** as the default room version".
    assert DEFAULT_ROOM_VERSION is KNOWN_ROOM_VERSIONS["12"]
    assert DEFAULT_ROOM_VERSION.identifier == "12"


@pytest.mark.parametrize(
    "identifier", ["0", "13", "", " 1", "1 ", "01", "1.0", "v1", "org.matrix.msc1234", "12a"]
)
def test_unknown_versions_raise(identifier: str) -> None:
    with pytest.raises(UnknownRoomVersion):
        get_room_version(identifier)


@pytest.mark.parametrize("identifier", [None, 1, 12, ["1"]])
def test_non_string_identifiers_raise_unknown(identifier: Any) -> None:
    with pytest.raises(UnknownRoomVersion):
        get_room_version(identifier)


def test_unknown_room_version_is_a_key_error() -> None:
    assert issubclass(UnknownRoomVersion, KeyError)


def test_room_versions_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KNOWN_ROOM_VERSIONS["1"].knock_join_rule = True  # type: ignore[misc]


# --- The feature matrix in content/rooms/_index.md ----------------------------
#
# | Feature \ Version                | 1 2 3 4 5 6 7 8 9 10 11 12 |
# | Knocking                         | ❌ ❌ ❌ ❌ ❌ ❌ ✔ ✔ ✔ ✔ ✔ ✔ |
# | Restricted join rules            | ❌ ❌ ❌ ❌ ❌ ❌ ❌ ✔ ✔ ✔ ✔ ✔ |
# | `knock_restricted` join rule     | ❌ … ❌ (1–9)         ✔ ✔ ✔ |
# | Additional room creators         | ❌ … ❌ (1–11)            ✔ |
FEATURE_MATRIX = {
    "knock_join_rule": [7, 8, 9, 10, 11, 12],
    "restricted_join_rule": [8, 9, 10, 11, 12],
    "knock_restricted_join_rule": [10, 11, 12],
    "creators_have_infinite_power": [12],
}


@pytest.mark.parametrize(("flag", "versions"), FEATURE_MATRIX.items())
def test_feature_matrix(flag: str, versions: list[int]) -> None:
    assert _versions_with(flag) == versions


# --- Per-version specifications (the rver-fragments each vN.md includes) ------

PER_VERSION_FLAGS = {
    # v1-event-ids fragment (v1–v2): $opaque:domain, event_id in the PDU.
    "event_ids_in_pdu": [1, 2],
    # v1-auth-rules (v1–v2); v3 moved the redaction domain check out of auth
    # (v3-handling-redactions).
    "redaction_domain_check_in_auth": [1, 2],
    # v1- and v3-auth-rules keep the m.room.aliases rule; v6 drops it (MSC2432).
    "special_case_aliases_auth": [1, 2, 3, 4, 5],
    # v5-signing-requirements onward.
    "enforce_key_validity": [5, 6, 7, 8, 9, 10, 11, 12],
    # v6-canonical-json onward (v1-canonical-json before).
    "strict_canonical_json": [6, 7, 8, 9, 10, 11, 12],
    "limit_notifications_power_levels": [6, 7, 8, 9, 10, 11, 12],
    # v1-floaty-power-levels is included up to v5.
    "float_power_levels": [1, 2, 3, 4, 5],
    # v1-stringy-power-levels is included up to v9.
    "integer_power_levels": [10, 11, 12],
    # v11: creator field gone (MSC2175), redacts moved into content (MSC2174).
    "implicit_room_creator": [11, 12],
    "redacts_in_content": [11, 12],
    # v12: room ID is the create event's hash (MSC4291).
    "room_id_from_create_event": [12],
}


@pytest.mark.parametrize(("flag", "versions"), PER_VERSION_FLAGS.items())
def test_per_version_flags(flag: str, versions: list[int]) -> None:
    assert _versions_with(flag) == versions


def test_every_boolean_flag_is_covered_by_a_test() -> None:
    booleans = {
        f.name
        for f in dataclasses.fields(RoomVersion)
        if f.type in ("bool", bool) and f.name != "stable"
    }
    assert booleans == set(FEATURE_MATRIX) | set(PER_VERSION_FLAGS)


@pytest.mark.parametrize(
    ("identifier", "event_id_format", "redaction_rules", "state_res"),
    [
        ("1", EventIdFormat.V1_OPAQUE, RedactionRules.V1, StateResAlgorithm.V1),
        ("2", EventIdFormat.V1_OPAQUE, RedactionRules.V1, StateResAlgorithm.V2),
        ("3", EventIdFormat.V3_BASE64, RedactionRules.V1, StateResAlgorithm.V2),
        ("4", EventIdFormat.V4_URLSAFE, RedactionRules.V1, StateResAlgorithm.V2),
        ("5", EventIdFormat.V4_URLSAFE, RedactionRules.V1, StateResAlgorithm.V2),
        ("6", EventIdFormat.V4_URLSAFE, RedactionRules.V6, StateResAlgorithm.V2),
        ("7", EventIdFormat.V4_URLSAFE, RedactionRules.V6, StateResAlgorithm.V2),
        ("8", EventIdFormat.V4_URLSAFE, RedactionRules.V8, StateResAlgorithm.V2),
        ("9", EventIdFormat.V4_URLSAFE, RedactionRules.V9, StateResAlgorithm.V2),
        ("10", EventIdFormat.V4_URLSAFE, RedactionRules.V9, StateResAlgorithm.V2),
        ("11", EventIdFormat.V4_URLSAFE, RedactionRules.V11, StateResAlgorithm.V2),
        ("12", EventIdFormat.V4_URLSAFE, RedactionRules.V11, StateResAlgorithm.V2_1),
    ],
)
def test_algorithms_per_version(
    identifier: str,
    event_id_format: EventIdFormat,
    redaction_rules: RedactionRules,
    state_res: StateResAlgorithm,
) -> None:
    version = get_room_version(identifier)
    assert version.event_id_format is event_id_format
    assert version.redaction_rules is redaction_rules
    assert version.state_res is state_res


def test_versions_differ_from_their_predecessor() -> None:
    # Each version exists because something changed (v2 and v3 change state
    # res and event IDs, later ones their flags): no two are identical.
    def behaviour(v: RoomVersion) -> tuple[Any, ...]:
        values = dataclasses.astuple(v)
        return values[1:]  # everything but the identifier

    seen = [behaviour(KNOWN_ROOM_VERSIONS[v]) for v in ALL]
    assert len(set(seen)) == len(seen)
