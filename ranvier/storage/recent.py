"""The newest entries of a stream, in memory (DESIGN.md: "Caches are explicit,
bounded and invalidated by the code that writes").

An incremental /sync asks "what happened after position P" where P is a
moment ago: which rooms had events, whose memberships changed. A
:class:`RecentLog` answers that from memory for recent P, and says "don't
know" (None) for older P, so the caller asks the database. Synapse keeps
"stream change caches" for the same purpose.

Entries are added by the writer once its transaction has committed
(:meth:`ranvier.storage.engine.Transaction.call_after_commit`), before the
stream's position moves past them, so a reader bounded by the current
position never misses one.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RecentLog(Generic[T]):
    """Entries at positions of one stream, oldest first, at most about ``capacity``.

    ``floor``: every entry with a position above it is here (None: no such
    promise yet, every question goes to the database).
    """

    def __init__(self, capacity: int, floor: int | None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.floor = floor
        self._positions: list[int] = []
        self._items: list[T] = []

    def __len__(self) -> int:
        return len(self._positions)

    def reset(self) -> None:
        """Forget everything (what was committed is unknown). The next entry
        added sets the floor: entries after it are added as they commit."""
        self.floor = None
        self._positions.clear()
        self._items.clear()

    def add(self, position: int, item: T) -> None:
        if self.floor is None:
            # First entry after a reset: later positions commit after it.
            self.floor = position
            return
        if position <= self.floor:
            return
        if not self._positions or position >= self._positions[-1]:
            self._positions.append(position)
            self._items.append(item)
        else:  # a lower position's commit finished late (PostgreSQL)
            index = bisect_right(self._positions, position)
            insort(self._positions, position)
            self._items.insert(index, item)
        if len(self._positions) > self.capacity + self.capacity // 4:
            # Drop the oldest quarter at once (amortised O(1) per entry).
            drop = len(self._positions) - self.capacity
            self.floor = self._positions[drop - 1]
            del self._positions[:drop]
            del self._items[:drop]

    def between(self, from_pos: int, to_pos: int) -> list[T] | None:
        """Entries with ``from_pos < position <= to_pos``, oldest first, or None
        when ``from_pos`` is older than what this log knows."""
        if self.floor is None or from_pos < self.floor:
            return None
        if from_pos >= to_pos:
            return []
        start = bisect_right(self._positions, from_pos)
        end = bisect_right(self._positions, to_pos)
        return self._items[start:end]

    def count_between(self, from_pos: int, to_pos: int) -> int | None:
        """How many entries :meth:`between` would return (None alike), without
        copying them."""
        if self.floor is None or from_pos < self.floor:
            return None
        if from_pos >= to_pos:
            return 0
        positions = self._positions
        return bisect_right(positions, to_pos) - bisect_right(positions, from_pos)

    def newest_at_or_before(self, to_pos: int, scan: int) -> Iterator[T] | None:
        """Up to ``scan`` entries at or before ``to_pos``, newest first, or None
        when ``to_pos`` is older than what this log knows. The caller stops
        reading once it has what it wants (nothing is copied; read it before
        the log changes); an entry missing from the result is older than the
        last one returned (or than the floor)."""
        if self.floor is None or to_pos < self.floor:
            return None
        end = bisect_right(self._positions, to_pos)
        items = self._items
        return (items[index] for index in range(end - 1, max(end - scan, 0) - 1, -1))


class RoomTails:
    """The newest few entries of each room in the events log: ``(position,
    event ID)``, the ID None for an event clients do not see. An incremental
    /sync asks, per room with new events, for the room's event before its
    token; the log would be scanned back for it, past every other room's
    events. Bounded: ``per_room`` entries per room, ``rooms`` rooms (then it
    starts again, empty).

    Each room's tail remembers the newest position added anywhere when it
    began (and the log's floor then): an event at or below that may have been
    committed before the tail existed and be missing from it, so answers stop
    there ("don't know", None).
    """

    def __init__(self, per_room: int = 4, rooms: int = 10_000) -> None:
        self.per_room = per_room
        self.rooms = rooms
        self._tails: dict[str, tuple[int, list[tuple[int, str | None]]]] = {}
        self._newest = 0

    def reset(self) -> None:
        self._tails.clear()
        self._newest = 0

    def add(self, room_id: str, position: int, event_id: str | None, floor: int) -> None:
        """An entry the log kept (``position`` above its ``floor``)."""
        tail = self._tails.get(room_id)
        if tail is None:
            if len(self._tails) >= self.rooms:
                self._tails.clear()
            tail = (max(self._newest, floor), [])
            self._tails[room_id] = tail
        entries = tail[1]
        if not entries or position > entries[-1][0]:
            entries.append((position, event_id))
        else:  # a lower position's commit finished late (PostgreSQL)
            insort(entries, (position, event_id), key=lambda entry: entry[0])
        if len(entries) > self.per_room:
            del entries[0]
        self._newest = max(self._newest, position)

    def newest_at_or_before(self, room_id: str, to_pos: int) -> tuple[int, str] | None:
        """The room's newest shown event at or before ``to_pos``: its position
        and ID, or None when not known here."""
        tail = self._tails.get(room_id)
        if tail is None:
            return None
        began, entries = tail
        for position, event_id in reversed(entries):
            if position > to_pos:
                continue
            if position <= began:
                return None
            if event_id is not None:
                return position, event_id
        return None
