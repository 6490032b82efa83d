"""The authorization rules against every case of auth.jsonl (Synapse as the oracle).

Each case gives an event, the auth events it cites (in v12 plus the implied
create event) and the IDs of auth events to treat as rejected. We run the
state-independent checks, then the state-dependent ones with the auth events
as the state, as Synapse does for an incoming PDU.

Cases with a ``spec_note`` (see the vectors' README, "Caveats") are asserted
against the spec; where the spec and Synapse's verdict agree, that is the
``allowed`` field as well. ``SPEC_NOTE_OUTCOMES`` records which way each went.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ranvier.core.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
)
from ranvier.core.events import Event, EventFormatError
from ranvier.core.room_versions import get_room_version
from tests.vectors import load_vectors

CASES = load_vectors("auth")

#: Case name -> what the spec says, for the cases with a ``spec_note``.
#: * 3pid-invite-missing-signed-token: Synapse crashes (KeyError) while
#:   selecting auth types; the spec rejects (rule 4.4.1.3: signed lacks token).
#:   We reject: allowed is False, as the vector says.
#: * auth-events-lists-create (v12): Synapse raises RuntimeError; the spec
#:   rejects (v12 rule 3.2: m.room.create MUST NOT be selected). We reject.
#: * create-has-room-id (v12): Synapse will not parse it; the spec rejects by
#:   rule 1.2. Our Event.from_pdu builds it and the auth rules reject it.
#: * pl-padded-string-user-level: users[bob] = " 50". v1–v9: fragment
#:   v1-stringy-power-levels allows leading/trailing whitespace, so it is
#:   "a string that is an integer": allowed, as Synapse says. v10+: integers
#:   only: rejected, as Synapse says. (We do not accept "5_0" as Synapse's
#:   int() would; that is outside the spec's grammar.)
SPEC_NOTE_OUTCOMES: dict[str, bool | None] = {
    "3pid-invite-missing-signed-token": False,
    "auth-events-lists-create": False,
    "create-has-room-id": False,
    # Depends on the version: see above; the vector's `allowed` matches the spec.
    "pl-padded-string-user-level": None,
}


def _name(case: dict[str, Any]) -> str:
    return str(case["id"]).split("/", 2)[2]


def run_case(case: dict[str, Any]) -> str | None:
    """``None`` if the event is allowed, else the stage that rejected it:
    ``"parse"``, ``"state_independent"`` or ``"state_dependent"``."""
    version = get_room_version(case["room_version"])
    inputs = case["input"]
    try:
        event = Event.from_pdu(version, inputs["event"])
        auth_events = [Event.from_pdu(version, pdu) for pdu in inputs["auth_events"]]
    except EventFormatError:
        return "parse"
    if "event_id" in inputs["event"]:
        assert event.event_id == inputs["event"]["event_id"]
    rejected = frozenset(inputs["rejected_auth_events"])
    try:
        check_state_independent_auth_rules(event, auth_events, rejected)
    except AuthError:
        return "state_independent"
    try:
        check_state_dependent_auth_rules(event, {e.state_tuple: e for e in auth_events})
    except AuthError:
        return "state_dependent"
    return None


def test_auth_vector_count() -> None:
    assert len(CASES) == 2256
    per_version = Counter(case["room_version"] for case in CASES)
    assert all(per_version[str(n)] == 187 for n in range(1, 7))
    assert all(per_version[str(n)] == 189 for n in range(7, 13))
    print(f"\nauth.jsonl: {len(CASES)} cases")


def test_every_spec_note_is_accounted_for() -> None:
    noted = {_name(case) for case in CASES if "spec_note" in case}
    assert noted == set(SPEC_NOTE_OUTCOMES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_auth_vector(case: dict[str, Any]) -> None:
    stage = run_case(case)
    allowed = stage is None
    expected = case["expected"]
    if "spec_note" in case:
        spec_outcome = SPEC_NOTE_OUTCOMES[_name(case)]
        if spec_outcome is not None:
            assert allowed is spec_outcome, case["spec_note"]
    if expected["failed_check"] == "parse":
        assert not allowed
    assert allowed is expected["allowed"], case["why"]
    # Where Synapse rejected cleanly, we reject in the same half of the rules.
    if expected["failed_check"] in ("state_independent", "state_dependent"):
        assert stage == expected["failed_check"]


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c["expected"]["failed_check"] != "parse"],
    ids=[c["id"] for c in CASES if c["expected"]["failed_check"] != "parse"],
)
def test_vector_auth_events_follow_the_selection(case: dict[str, Any]) -> None:
    """Unless a case is about bad auth_events, its auth_events are exactly the
    ones the spec's selection gives from the state before (see the README)."""
    if _name(case).startswith("auth-events-"):
        return
    version = get_room_version(case["room_version"])
    event = Event.from_pdu(version, case["input"]["event"])
    cited = {Event.from_pdu(version, pdu) for pdu in case["input"]["auth_events"]}
    cited_keys = {e.state_tuple for e in cited if e.event_id in event.auth_event_ids}
    assert cited_keys <= auth_types_for_event(event)
