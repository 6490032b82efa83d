"""A bounded cache of database reads, invalidated by the code that writes
(DESIGN.md, "Caches are explicit, bounded and invalidated by the code that
writes").

Writers invalidate once their transaction has committed
(:meth:`ranvier.storage.engine.Transaction.call_after_commit`), and every
invalidation bumps a generation: a read that started before it may have
seen the old rows, so it is returned but not remembered. A cache registered
with :meth:`ranvier.storage.engine.Database.on_positions_reset` empties when
what was committed becomes unknown.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """``key -> value`` read from the database, least recently used dropped
    beyond ``size`` entries."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def peek(self, key: K) -> V | None:
        """The cached value, or None when not cached; reads nothing."""
        return self._entries.get(key)

    async def get(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        keep: Callable[[V], bool] | None = None,
    ) -> V:
        """The cached value, or ``await load()`` (remembered unless an
        invalidation happened meanwhile, or ``keep`` says it is not worth it)."""
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
            return entries[key]
        generation = self._generation
        value = await load()
        if generation == self._generation and (keep is None or keep(value)):
            self._put(key, value)
        return value

    def set(self, key: K, value: V) -> None:
        """What a writer just committed."""
        self._generation += 1
        self._put(key, value)

    def invalidate(self, keys: Iterable[K]) -> None:
        self._generation += 1
        for key in keys:
            self._entries.pop(key, None)

    def invalidate_where(self, predicate: Callable[[K], bool]) -> None:
        self.invalidate([key for key in self._entries if predicate(key)])

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def _put(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.size:
            entries.popitem(last=False)
