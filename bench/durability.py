"""The disk's durable-commit floor, measured in the same run as the servers.

A durable commit cannot return before one small write has reached stable
storage: a loop of ``write`` + ``fsync`` on a file in the benchmark's work
folder (the servers' data folders' filesystem) measures what that costs here.
Send latency is then reported as a multiple of it (issue: "send p50 within 2×
of the disk's durable-commit floor"), which says how much of a send is the disk
and how much is the server.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

#: Bytes appended per round: about one SQLite WAL frame header plus a small row.
WRITE_BYTES = 512
ROUNDS = 200
#: The send scenario's single-sender figure that is compared with the floor.
SEND_FIGURE = "1 sender p50 (ms)"
SEND_TITLE = "3 send messages"


def durable_commit_floor(folder: Path, rounds: int = ROUNDS) -> dict[str, float]:
    """p50 and p95 (ms) of appending ``WRITE_BYTES`` to a file and fsyncing it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fsync-floor.bin"
    payload = os.urandom(WRITE_BYTES)
    samples: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            os.write(fd, payload)
            os.fsync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p95": samples[min(len(samples) - 1, int(0.95 * len(samples)))],
    }


def send_over_floor(send_p50_ms: float, floor_p50_ms: float) -> float:
    """Send p50 as a multiple of the floor (a floor of 0 ms, e.g. tmpfs: ∞)."""
    return send_p50_ms / floor_p50_ms if floor_p50_ms > 0 else float("inf")
