"""State resolution v1, v2 and v2.1 against every case of state_res.jsonl
(Synapse as the oracle; see the vectors' README, caveats 5 and 6)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from ranvier.core.events import Event, StateKey
from ranvier.core.room_versions import StateResAlgorithm, get_room_version
from ranvier.core.state_res import resolve_state
from tests.vectors import load_vectors

CASES = load_vectors("state_res")


def flatten(nested: Mapping[str, Mapping[str, str]]) -> dict[StateKey, str]:
    """``{type: {state_key: id}}`` -> ``{(type, state_key): id}``."""
    return {
        (event_type, state_key): event_id
        for event_type, by_key in nested.items()
        for state_key, event_id in by_key.items()
    }


def load_case(case: dict[str, Any]) -> tuple[Any, list[dict[StateKey, str]], dict[str, Event]]:
    version = get_room_version(case["room_version"])
    event_map: dict[str, Event] = {}
    for pdu in case["input"]["events"]:
        event = Event.from_pdu(version, pdu)
        assert event.event_id == pdu["event_id"]
        event_map[event.event_id] = event
    state_sets = [flatten(state_set) for state_set in case["input"]["state_sets"]]
    return version, state_sets, event_map


def test_state_res_vector_counts() -> None:
    assert len(CASES) == 337
    per_algorithm = Counter(case["input"]["algorithm"] for case in CASES)
    assert per_algorithm == {"v1": 8, "v2": 297, "v2.1": 32}
    per_version = Counter(case["room_version"] for case in CASES)
    assert per_version["1"] == 8
    assert all(29 <= per_version[str(number)] <= 32 for number in range(2, 13))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_state_res_vector(case: dict[str, Any]) -> None:
    version, state_sets, event_map = load_case(case)
    assert version.state_res is StateResAlgorithm(case["input"]["algorithm"])
    expected = flatten(case["expected"]["resolved_state"])
    assert resolve_state(version, state_sets, event_map) == expected
    # The order of the state sets never matters.
    assert resolve_state(version, state_sets[::-1], event_map) == expected
