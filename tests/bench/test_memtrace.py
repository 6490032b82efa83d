"""bench/memtrace.py: its dumps name Ranvier's containers and say what grew between two."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from bench.memtrace import compare, container_lengths, dump
from ranvier.storage.cache import ReadCache
from ranvier.storage.recent import RecentLog

pytestmark = pytest.mark.bench


def test_container_lengths_name_the_attributes_of_ranvier_objects() -> None:
    cache: ReadCache[str, int] = ReadCache(size=5)
    for key in "abcdefg":
        cache.set(key, 1)
    log: RecentLog[str] = RecentLog(capacity=100, floor=0)
    for position in range(1, 38):
        log.add(position, "!room:localhost")

    lengths = container_lengths()

    # The largest instance of each class counts: other tests' objects may be alive too.
    assert lengths["ranvier.storage.cache.ReadCache._entries"] >= 5
    assert lengths["ranvier.storage.recent.RecentLog._items"] >= 37
    assert lengths["ranvier.storage.recent.RecentLog._positions"] >= 37
    assert all(key.startswith("ranvier.") for key in lengths)
    assert len(cache) == 5 and len(log) == 37  # still alive while measured


def test_compare_reports_the_growth_between_two_dumps(tmp_path: Path) -> None:
    tracemalloc.start(1)
    try:
        log: RecentLog[str] = RecentLog(capacity=100_000, floor=0)
        dump(tmp_path, 1)
        for position in range(1, 20_001):
            log.add(position, f"!room{position}:localhost")
        dump(tmp_path, 2)
    finally:
        tracemalloc.stop()

    facts = json.loads((tmp_path / "dump-2.json").read_text())
    assert facts["traced_bytes"] > 0
    assert facts["containers"]["ranvier.storage.recent.RecentLog._items"] >= 20_000
    report = compare(tmp_path / "dump-1", tmp_path / "dump-2")
    assert report.startswith("traced: ")
    assert "grew most, by source line:" in report
    assert "20000  ranvier.storage.recent.RecentLog._items" in report
    # The strings built in this test's loop are among the largest growths by line.
    assert "test_memtrace.py" in report
    assert len(log) == 20_000
