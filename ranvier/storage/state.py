"""Room state as state groups: snapshots with deltas over short integer IDs.

DESIGN.md, "Key structures": a ``(type, state_key)`` pair is interned once in
``state_keys`` (a short ID); an event's short ID is its ``stream_ordering``.
A state group is either a *snapshot* (``parent_group`` NULL, one row per
state entry) or a *delta* (a parent plus the rows that changed). Every event
points at the group of the state before it and after it; a message event
points at the existing group (it copies nothing), a state event creates a
delta group with one row. Chains are bounded: when the parent is already
:data:`MAX_CHAIN_LENGTH` deltas away from its snapshot, or the delta is larger
than :data:`MAX_DELTA_ROWS`, the new group is a fresh snapshot, copied by one
``INSERT ... SELECT`` inside the database. Resolving a group reads at most
``MAX_CHAIN_LENGTH + 1`` groups' rows in one query.

Groups are immutable once committed, so resolved groups are cached (bounded
LRU) without invalidation; a group is only cached once it was read back
from committed data or after the transaction that created it committed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ranvier.storage.engine import Database, Queryable, Transaction, placeholders

StateKey = tuple[str, str]
#: ``(type, state_key) -> event_id``.
StateMap = dict[StateKey, str]

#: Deltas allowed between a group and its snapshot before a new snapshot is taken.
MAX_CHAIN_LENGTH = 50
#: A delta with more rows than this is stored as a snapshot instead.
MAX_DELTA_ROWS = 100
#: Short state-key IDs held in memory (auth-event keys, recent members).
_KEY_ID_CACHE_SIZE = 10_000

_CHAIN_CTE = (
    "WITH RECURSIVE chain(id, parent, lvl) AS ("
    " SELECT id, parent_group, 0 FROM state_groups WHERE id = ?"
    " UNION ALL"
    " SELECT g.id, g.parent_group, c.lvl + 1 FROM state_groups g JOIN chain c ON g.id = c.parent"
    ") "
)

# Resolve a whole group: the row nearest to the group (lowest lvl) wins.
_RESOLVE_SQL = (
    _CHAIN_CTE + "SELECT k.type, k.state_key, ev.event_id, c.lvl"
    " FROM chain c"
    " JOIN state_group_entries e ON e.state_group = c.id"
    " JOIN state_keys k ON k.id = e.state_key_id"
    " JOIN events ev ON ev.stream_ordering = e.event_nid"
    " ORDER BY c.lvl DESC"
)

# Resolve several groups at once (an initial /sync reads one or two per room):
# the same walk from each root, rows tagged with their root.
def _resolve_many_sql(count: int) -> str:
    return (
        "WITH RECURSIVE chain(root, id, parent, lvl) AS ("
        f" SELECT id, id, parent_group, 0 FROM state_groups WHERE id IN ({placeholders(count)})"
        " UNION ALL"
        " SELECT c.root, g.id, g.parent_group, c.lvl + 1"
        " FROM state_groups g JOIN chain c ON g.id = c.parent"
        ") "
        "SELECT c.root, k.type, k.state_key, ev.event_id, c.lvl"
        " FROM chain c"
        " JOIN state_group_entries e ON e.state_group = c.id"
        " JOIN state_keys k ON k.id = e.state_key_id"
        " JOIN events ev ON ev.stream_ordering = e.event_nid"
        " ORDER BY c.root, c.lvl DESC"
    )


#: Groups resolved per query by :meth:`StateStore.get_state_ids_many`.
_MANY_CHUNK = 100

# Copy a group's resolved state into a new snapshot group, inside the database.
_SNAPSHOT_SQL = (
    _CHAIN_CTE + "INSERT INTO state_group_entries (state_group, state_key_id, event_nid)"
    " SELECT CAST(? AS BIGINT), state_key_id, event_nid FROM ("
    "  SELECT e.state_key_id AS state_key_id, e.event_nid AS event_nid,"
    "   ROW_NUMBER() OVER (PARTITION BY e.state_key_id ORDER BY c.lvl) AS rn"
    "  FROM chain c JOIN state_group_entries e ON e.state_group = c.id"
    " ) ranked WHERE rn = 1"
)


class _LRU:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[int, StateMap] = OrderedDict()

    def get(self, key: int) -> StateMap | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: int, value: StateMap) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)


class StateStore:
    def __init__(self, database: Database, cache_size: int = 256) -> None:
        self.database = database
        self._groups = _LRU(cache_size)
        #: Short IDs of committed state keys (rows never change nor go away).
        self._key_ids: OrderedDict[StateKey, int] = OrderedDict()

    # --- reads --------------------------------------------------------------------

    async def get_state_ids(self, group: int, db: Queryable | None = None) -> StateMap:
        """The full state of ``group``. Do not mutate the returned map (it may be cached)."""
        cached = self._groups.get(group)
        if cached is not None:
            return cached
        rows = await (db or self.database).fetch_all(_RESOLVE_SQL, group)
        state: StateMap = {}
        for row in rows:  # snapshot first, nearest delta last
            state[(row[0], row[1])] = row[2]
        if db is None or db is self.database:
            self._groups.put(group, state)
        return state

    async def get_state_ids_many(self, groups: Iterable[int]) -> dict[int, StateMap]:
        """The full state of each of ``groups``: cached ones from memory, the
        others read :data:`_MANY_CHUNK` at a time (not one query each). Do not
        mutate the returned maps."""
        found: dict[int, StateMap] = {}
        missing: list[int] = []
        for group in dict.fromkeys(groups):
            cached = self._groups.get(group)
            if cached is not None:
                found[group] = cached
            else:
                missing.append(group)
        for start in range(0, len(missing), _MANY_CHUNK):
            chunk = missing[start : start + _MANY_CHUNK]
            read: dict[int, StateMap] = {group: {} for group in chunk}
            rows = await self.database.fetch_all(_resolve_many_sql(len(chunk)), *chunk)
            for row in rows:  # per root: snapshot first, nearest delta last
                read[int(row[0])][(row[1], row[2])] = row[3]
            for group, state in read.items():
                self._groups.put(group, state)
            found.update(read)
        return found

    async def get_state_ids_for_keys(
        self, group: int, keys: Iterable[StateKey], db: Queryable | None = None
    ) -> StateMap:
        """Only some entries of ``group`` (cheap for large rooms when not cached)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        cached = self._groups.get(group)
        if cached is not None:
            return {key: cached[key] for key in wanted if key in cached}
        conditions = " OR ".join("(k.type = ? AND k.state_key = ?)" for _ in wanted)
        args: list[object] = [group]
        for event_type, state_key in wanted:
            args.extend((event_type, state_key))
        sql = (
            _CHAIN_CTE + "SELECT k.type, k.state_key, ev.event_id, c.lvl"
            " FROM chain c"
            " JOIN state_group_entries e ON e.state_group = c.id"
            " JOIN state_keys k ON k.id = e.state_key_id"
            " JOIN events ev ON ev.stream_ordering = e.event_nid"
            f" WHERE {conditions} ORDER BY c.lvl DESC"
        )
        rows = await (db or self.database).fetch_all(sql, *args)
        return {(row[0], row[1]): row[2] for row in rows}

    async def count_group_rows(self, group: int) -> int:
        return int(
            await self.database.fetch_val(
                "SELECT COUNT(*) FROM state_group_entries WHERE state_group = ?", group
            )
        )

    # --- writes (inside the caller's transaction) ---------------------------------

    async def intern_state_keys(
        self, txn: Transaction, keys: Iterable[StateKey]
    ) -> dict[StateKey, int]:
        """Short IDs of ``keys``, creating the missing ones."""
        wanted = list(dict.fromkeys(keys))
        result = {key: self._key_ids[key] for key in wanted if key in self._key_ids}
        todo = [key for key in wanted if key not in result]
        if len(todo) == 1:
            # One key not seen lately: most often a new member's (a join), so
            # insert first, one statement; look it up if it exists already.
            result[todo[0]] = await self._insert_state_key(txn, todo[0])
        elif todo:
            result.update(await self._select_state_keys(txn, todo))
            for key in todo:
                if key not in result:
                    result[key] = await self._insert_state_key(txn, key)
        if todo:
            learnt = {key: result[key] for key in todo}
            txn.call_after_commit(lambda: self._remember_key_ids(learnt))
        return result

    @staticmethod
    async def _select_state_keys(txn: Transaction, keys: list[StateKey]) -> dict[StateKey, int]:
        found: dict[StateKey, int] = {}
        for start in range(0, len(keys), 200):
            chunk = keys[start : start + 200]
            conditions = " OR ".join("(type = ? AND state_key = ?)" for _ in chunk)
            args: list[object] = [part for key in chunk for part in key]
            rows = await txn.fetch_all(
                f"SELECT type, state_key, id FROM state_keys WHERE {conditions}", *args
            )
            found.update({(row[0], row[1]): int(row[2]) for row in rows})
        return found

    @staticmethod
    async def _insert_state_key(txn: Transaction, key: StateKey) -> int:
        event_type, state_key = key
        key_id = await txn.fetch_val(
            "INSERT INTO state_keys (type, state_key) VALUES (?, ?)"
            " ON CONFLICT (type, state_key) DO NOTHING RETURNING id",
            event_type,
            state_key,
        )
        if key_id is None:  # exists (inserted earlier, or meanwhile by another transaction)
            key_id = await txn.fetch_val(
                "SELECT id FROM state_keys WHERE type = ? AND state_key = ?",
                event_type,
                state_key,
            )
        return int(key_id)

    def _remember_key_ids(self, key_ids: dict[StateKey, int]) -> None:
        cache = self._key_ids
        for key, key_id in key_ids.items():
            cache[key] = key_id
            cache.move_to_end(key)
        while len(cache) > _KEY_ID_CACHE_SIZE:
            cache.popitem(last=False)

    async def chain_length(self, txn: Transaction, group: int | None) -> int:
        """Deltas between ``group`` and its snapshot (-1 for no group)."""
        if group is None:
            return -1
        value = await txn.fetch_val("SELECT chain_length FROM state_groups WHERE id = ?", group)
        if value is None:
            raise ValueError(f"unknown state group {group}")
        return int(value)

    async def add_group(
        self,
        txn: Transaction,
        room_id: str,
        parent: int | None,
        parent_chain_length: int,
        state_key_id: int,
        event_nid: int,
        pending_entries: list[tuple[int, int, int]],
    ) -> tuple[int, int]:
        """A new group = ``parent`` with one entry changed; ``(group, chain_length)``.

        A delta (its row appended to ``pending_entries``, written by
        :meth:`flush_entries`) unless the chain would pass
        :data:`MAX_CHAIN_LENGTH`; then a snapshot, copied in the database.
        """
        snapshot = parent is None or parent_chain_length + 1 > MAX_CHAIN_LENGTH
        chain_length = 0 if snapshot else parent_chain_length + 1
        group = int(
            await txn.fetch_val(
                "INSERT INTO state_groups (room_id, parent_group, chain_length)"
                " VALUES (?, ?, ?) RETURNING id",
                room_id,
                None if snapshot else parent,
                chain_length,
            )
        )
        if snapshot and parent is not None:
            await self.flush_entries(txn, pending_entries)  # the copy reads the parent's rows
            await txn.execute(_SNAPSHOT_SQL, parent, group)
            await txn.execute(
                "INSERT INTO state_group_entries (state_group, state_key_id, event_nid)"
                " VALUES (?, ?, ?) ON CONFLICT (state_group, state_key_id)"
                " DO UPDATE SET event_nid = excluded.event_nid",
                group,
                state_key_id,
                event_nid,
            )
        else:
            pending_entries.append((group, state_key_id, event_nid))
        return group, chain_length

    async def flush_entries(
        self, txn: Transaction, pending_entries: list[tuple[int, int, int]]
    ) -> None:
        if pending_entries:
            await txn.execute_many(
                "INSERT INTO state_group_entries (state_group, state_key_id, event_nid)"
                " VALUES (?, ?, ?)",
                pending_entries,
            )
            pending_entries.clear()

    async def create_group(
        self,
        txn: Transaction,
        room_id: str,
        parent: int | None,
        delta: Mapping[StateKey, int],
    ) -> int:
        """A new group = ``parent`` + ``delta`` (``(type, state_key) -> event short ID``),
        for changes of several entries at once (state resolution).

        Stored as a delta when the chain stays short and the delta small,
        else as a snapshot. Returns the new group's ID.
        """
        parent_length = await self.chain_length(txn, parent)
        chain_length = parent_length + 1
        snapshot = parent is None or chain_length > MAX_CHAIN_LENGTH or len(delta) > MAX_DELTA_ROWS
        group = int(
            await txn.fetch_val(
                "INSERT INTO state_groups (room_id, parent_group, chain_length)"
                " VALUES (?, ?, ?) RETURNING id",
                room_id,
                None if snapshot else parent,
                0 if snapshot else chain_length,
            )
        )
        if snapshot and parent is not None:
            await txn.execute(_SNAPSHOT_SQL, parent, group)
        key_ids = await self.intern_state_keys(txn, delta)
        rows = [(group, key_ids[key], event_nid) for key, event_nid in delta.items()]
        if rows:
            await txn.execute_many(
                "INSERT INTO state_group_entries (state_group, state_key_id, event_nid)"
                " VALUES (?, ?, ?) ON CONFLICT (state_group, state_key_id)"
                " DO UPDATE SET event_nid = excluded.event_nid",
                rows,
            )
        return group

    def cache_group(self, group: int, state: StateMap) -> None:
        """Remember a group's resolved state; call only after its transaction committed."""
        self._groups.put(group, state)
