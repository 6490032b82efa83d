"""In-memory helpers of the stores: :class:`RecentLog` (the newest entries of a
stream) and :class:`ReadCache` (bounded reads invalidated by writers). Pure
data structures, no database."""

from __future__ import annotations

import asyncio

import pytest

from ranvier.storage.cache import ReadCache
from ranvier.storage.recent import RecentLog, RoomTails


def test_recent_log_answers_from_its_floor_and_says_none_below() -> None:
    log: RecentLog[str] = RecentLog(capacity=10, floor=5)
    assert log.between(5, 5) == []
    assert log.between(4, 9) is None  # before what it knows: ask the database
    log.add(6, "a")
    log.add(7, "b")
    log.add(9, "c")
    assert log.between(5, 9) == ["a", "b", "c"]
    assert log.between(6, 9) == ["b", "c"]
    assert log.between(5, 8) == ["a", "b"]  # bounded by the reader's position
    assert log.between(9, 12) == []
    assert log.between(7, 7) == []


def test_recent_log_counts_and_scans_back_as_between_would() -> None:
    log: RecentLog[str] = RecentLog(capacity=10, floor=5)
    assert log.count_between(4, 9) is None
    assert log.newest_at_or_before(4, 10) is None
    for position, item in ((6, "a"), (7, "b"), (9, "c")):
        log.add(position, item)
    for from_pos, to_pos in ((5, 9), (6, 9), (5, 8), (9, 12), (7, 7), (8, 6)):
        between = log.between(from_pos, to_pos)
        assert between is not None
        assert log.count_between(from_pos, to_pos) == len(between)
    newest = log.newest_at_or_before(8, 10)
    assert newest is not None and list(newest) == ["b", "a"]
    newest = log.newest_at_or_before(9, 2)  # at most ``scan`` entries
    assert newest is not None and list(newest) == ["c", "b"]
    newest = log.newest_at_or_before(5, 2)
    assert newest is not None and list(newest) == []


def test_recent_log_without_floor_knows_nothing_until_its_first_entry() -> None:
    log: RecentLog[str] = RecentLog(capacity=10, floor=None)
    assert log.between(0, 100) is None
    log.add(40, "first")  # sets the floor: later entries are all added
    assert log.between(39, 50) is None
    assert log.between(40, 50) == []
    log.add(41, "second")
    assert log.between(40, 50) == ["second"]


def test_recent_log_keeps_order_when_a_lower_position_arrives_late() -> None:
    log: RecentLog[str] = RecentLog(capacity=10, floor=0)
    log.add(2, "two")
    log.add(1, "one")
    log.add(3, "three")
    assert log.between(0, 3) == ["one", "two", "three"]


def test_recent_log_drops_its_oldest_and_raises_its_floor() -> None:
    log: RecentLog[int] = RecentLog(capacity=8, floor=0)
    for position in range(1, 11):  # 10 = capacity + capacity // 4: not trimmed yet
        log.add(position, position)
    assert log.between(0, 10) == list(range(1, 11))
    log.add(11, 11)  # over the slack: trimmed back to 8
    assert len(log) == 8
    assert log.floor == 3
    assert log.between(2, 11) is None
    assert log.between(3, 11) == list(range(4, 12))


def test_recent_log_reset_forgets_everything() -> None:
    log: RecentLog[str] = RecentLog(capacity=4, floor=0)
    log.add(1, "a")
    log.reset()
    assert log.between(0, 1) is None
    assert len(log) == 0


def test_recent_log_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RecentLog(capacity=0, floor=0)
    with pytest.raises(ValueError):
        ReadCache(size=0)


async def test_read_cache_loads_once_then_serves_from_memory() -> None:
    cache: ReadCache[str, int] = ReadCache(size=2)
    loads: list[str] = []

    def loader(key: str, value: int):  # type: ignore[no-untyped-def]
        async def load() -> int:
            loads.append(key)
            return value

        return load

    assert await cache.get("a", loader("a", 1)) == 1
    assert await cache.get("a", loader("a", 99)) == 1
    assert loads == ["a"]
    assert cache.peek("a") == 1 and cache.peek("b") is None
    # Least recently used goes first.
    await cache.get("b", loader("b", 2))
    await cache.get("a", loader("a", 1))
    await cache.get("c", loader("c", 3))
    assert "b" not in cache and "a" in cache and "c" in cache
    cache.invalidate(["a"])
    assert await cache.get("a", loader("a", 10)) == 10
    cache.invalidate_where(lambda key: key in ("a", "c"))
    assert len(cache) == 0
    cache.set("z", 26)
    assert await cache.get("z", loader("z", 0)) == 26
    cache.clear()
    assert "z" not in cache


async def test_read_cache_does_not_keep_a_read_that_raced_an_invalidation() -> None:
    cache: ReadCache[str, str] = ReadCache(size=10)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_stale_load() -> str:
        started.set()
        await release.wait()
        return "stale"

    reader = asyncio.create_task(cache.get("user", slow_stale_load))
    await started.wait()
    cache.invalidate(["user"])  # a writer committed while the read was in flight
    release.set()
    assert await reader == "stale"  # the caller gets what it read...

    async def fresh() -> str:
        return "fresh"

    assert await cache.get("user", fresh) == "fresh"  # ...but it was not kept


def test_room_tails_answer_a_rooms_newest_shown_event_or_say_they_do_not_know() -> None:
    tails = RoomTails(per_room=3, rooms=3)
    assert tails.newest_at_or_before("!a", 100) is None  # never seen
    tails.add("!a", 11, "$11", floor=10)
    tails.add("!b", 12, "$12", floor=10)
    tails.add("!a", 13, None, floor=10)  # an event clients do not see
    tails.add("!a", 14, "$14", floor=10)
    assert tails.newest_at_or_before("!a", 20) == (14, "$14")
    assert tails.newest_at_or_before("!a", 13) == (11, "$11")  # past the hidden one
    assert tails.newest_at_or_before("!a", 10) is None  # at the floor: unknown
    # "!b" began when 11 was the newest position added: its events at or
    # below 11 may predate it, so those are not answered.
    assert tails.newest_at_or_before("!b", 12) == (12, "$12")
    assert tails.newest_at_or_before("!b", 11) is None
    # A lower position committed late (PostgreSQL) goes in order; one at or
    # below where the tail began is never an answer.
    tails.add("!c", 20, "$20", floor=10)  # began at 14
    tails.add("!c", 16, "$16", floor=10)
    tails.add("!c", 13, "$13", floor=10)
    assert tails.newest_at_or_before("!c", 19) == (16, "$16")
    assert tails.newest_at_or_before("!c", 15) is None
    # At most ``per_room`` entries: the oldest go, and with them their answers.
    tails.add("!a", 21, "$21", floor=10)
    assert tails.newest_at_or_before("!a", 20) == (14, "$14")
    assert tails.newest_at_or_before("!a", 12) is None  # 11 was dropped
    # Beyond ``rooms`` rooms it starts again, empty.
    tails.add("!d", 22, "$22", floor=10)
    assert tails.newest_at_or_before("!a", 30) is None
    assert tails.newest_at_or_before("!d", 30) == (22, "$22")
    tails.reset()
    assert tails.newest_at_or_before("!d", 30) is None
