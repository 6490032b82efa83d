"""The redaction algorithm of each room version against redaction.jsonl."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.core.redaction import redact
from ranvier.core.room_versions import get_room_version
from tests.vectors import load_vectors

CASES = load_vectors("redaction")


def test_redaction_vector_count() -> None:
    assert len(CASES) == 168
    print(f"\nredaction.jsonl: {len(CASES)} cases")


def _without_unsigned(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "unsigned"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_redaction_vector(case: dict[str, Any]) -> None:
    version = get_room_version(case["room_version"])
    original = case["input"]["event"]
    snapshot = repr(original)
    redacted = redact(version, original)
    expected = case["expected"]["redacted"]
    # Caveat 4 of the vectors' README: Synapse keeps parts of `unsigned`, the
    # spec's algorithm does not. We follow the spec: `unsigned` is dropped.
    assert "unsigned" not in redacted
    assert redacted == _without_unsigned(expected)
    assert repr(original) == snapshot, "redact() must not mutate its input"
