"""Entries of rooms' current state in memory: ``(room_id, type, state_key) ->
event_id``, or None for a key known to be absent.

Every event built here needs its auth events from the current state (create,
power levels, join rules, the sender's and target's member events), and a join
also asks for the join rules and the joiner's member event before it is
built (restricted rooms) and for the create event after (room upgrades). Those
keys rarely change, so each is read from the database once. The event store
updates the entries its transactions wrote once they have committed
(:meth:`written`); like :class:`ranvier.storage.cache.ReadCache`, every
update bumps a generation, and a read that started before one is returned but
not remembered (it may predate the write).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

StateKey = tuple[str, str]
_Entry = tuple[str, str, str]


class CurrentStateCache:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._entries: OrderedDict[_Entry, str | None] = OrderedDict()
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, room_id: str, keys: Iterable[StateKey]
    ) -> tuple[dict[StateKey, str], list[StateKey]]:
        """The cached event IDs of ``keys`` (absent ones left out) and the keys not cached."""
        found: dict[StateKey, str] = {}
        missing: list[StateKey] = []
        entries = self._entries
        for key in keys:
            entry = (room_id, key[0], key[1])
            if entry not in entries:
                missing.append(key)
                continue
            entries.move_to_end(entry)
            event_id = entries[entry]
            if event_id is not None:
                found[key] = event_id
        return found, missing

    def remember(
        self,
        generation: int,
        room_id: str,
        asked: Iterable[StateKey],
        found: Mapping[StateKey, str],
    ) -> None:
        """What a read of ``asked`` (started at ``generation``) found; keys it did
        not find are absent. Ignored when a write committed meanwhile."""
        if generation != self.generation:
            return
        for key in asked:
            self._put((room_id, key[0], key[1]), found.get(key))

    def written(self, room_id: str, changes: Mapping[StateKey, str | None]) -> None:
        """A committed transaction set (or, with None, removed) these keys."""
        self.generation += 1
        for key, event_id in changes.items():
            self._put((room_id, key[0], key[1]), event_id)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def _put(self, entry: _Entry, event_id: str | None) -> None:
        entries = self._entries
        entries[entry] = event_id
        entries.move_to_end(entry)
        if len(entries) > self.size:
            entries.popitem(last=False)
