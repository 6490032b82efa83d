"""glibc's malloc arenas are capped at start (ranvier/allocator.py), unless the
operator set MALLOC_ARENA_MAX."""

from __future__ import annotations

import platform
import sys

import pytest

from ranvier.allocator import DEFAULT_ARENAS, M_ARENA_MAX, limit_malloc_arenas


def test_arenas_are_capped_with_mallopt() -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(option: int, value: int) -> int:
        calls.append((option, value))
        return 1

    assert limit_malloc_arenas({}, mallopt)
    assert calls == [(M_ARENA_MAX, DEFAULT_ARENAS)]
    assert (M_ARENA_MAX, DEFAULT_ARENAS) == (-8, 2)


def test_the_operators_malloc_arena_max_wins() -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(option: int, value: int) -> int:
        calls.append((option, value))
        return 1

    assert not limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}, mallopt)
    assert calls == []


def test_a_refused_mallopt_is_reported() -> None:
    assert not limit_malloc_arenas({}, lambda option, value: 0)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt only",
)
def test_glibc_accepts_the_cap() -> None:
    # The real mallopt, in this test process.
    assert limit_malloc_arenas({})
