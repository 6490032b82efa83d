"""Authorization rules for every room version (STUB: being written)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ranvier.core.events import Event, StateKey


class AuthError(Exception):
    """The event is not allowed by the authorization rules."""


def check_state_independent_auth_rules(
    event: Event, auth_events: Iterable[Event], rejected_event_ids: frozenset[str] = frozenset()
) -> None:
    raise NotImplementedError


def check_state_dependent_auth_rules(event: Event, state: Mapping[StateKey, Event]) -> None:
    raise NotImplementedError


def auth_types_for_event(event: Event) -> set[StateKey]:
    raise NotImplementedError
