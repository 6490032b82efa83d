"""What every /sync provider is given and what it answers (DESIGN.md, "Streams").

A provider answers "what changed for this user between positions A and B" for
its stream: ``request.since`` (None: an initial sync, "everything") and
``request.now`` (the ``next_batch`` being built). It returns its
:class:`Section`: top-level response fields, per-room additions, and whether
there is anything new (a long-poll returns at once when some provider says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ranvier.core.filters import Filter
from ranvier.services.sync_tokens import SyncToken

if TYPE_CHECKING:
    from ranvier.services.sync_providers.memberships import RoomMemberships


@dataclass(slots=True)
class RoomExtras:
    """Per-room additions of the non-room providers, which the rooms provider
    places in ``rooms.join``/``rooms.leave`` (and by which it decides whether a
    quiet joined room appears in an incremental sync at all)."""

    #: room ID → ephemeral events (typing, then receipts), unfiltered.
    ephemeral: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: room ID → room account data events, unfiltered.
    account_data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, section: Section) -> None:
        for room_id, events in section.ephemeral.items():
            self.ephemeral.setdefault(room_id, []).extend(events)
        for room_id, events in section.room_account_data.items():
            self.account_data.setdefault(room_id, []).extend(events)


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """One /sync being built: who, which range, and the per-request context."""

    user_id: str
    device_id: str | None
    filter: Filter
    #: None for an initial sync; else clamped to ``now``.
    since: SyncToken | None
    #: The token this response ends at (``next_batch``): a provider reports
    #: changes in (since.<slot>, now.<slot>].
    now: SyncToken
    #: The ``full_state`` parameter.
    full_state: bool
    #: The user's rooms and their membership changes in the range.
    memberships: RoomMemberships
    #: What the other providers add to rooms (filled before the rooms provider runs).
    room_extras: RoomExtras = field(default_factory=RoomExtras)

    @property
    def initial(self) -> bool:
        """Everything from the start: an initial sync or ``full_state=true``."""
        return self.since is None or self.full_state


@dataclass(slots=True)
class Section:
    #: Top-level response keys (``presence``, ``to_device``, ...); they replace
    #: the empty defaults (``next_batch`` too, when a stream cannot deliver all).
    fields: dict[str, Any] = field(default_factory=dict)
    #: room ID → ephemeral events for ``rooms.join.<room>.ephemeral``.
    ephemeral: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: room ID → events for ``rooms.<join|leave>.<room>.account_data``.
    room_account_data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Whether there is something new: a long-poll returns at once.
    has_updates: bool = False


class SyncProvider(Protocol):
    """One stream's part of /sync (and of any other sync front end)."""

    async def changes(self, request: SyncRequest) -> Section: ...
