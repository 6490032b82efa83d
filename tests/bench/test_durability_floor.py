"""The bench's durable-commit floor (bench/durability.py) and its report line."""

from __future__ import annotations

from pathlib import Path

from bench.durability import SEND_FIGURE, SEND_TITLE, durable_commit_floor, send_over_floor
from bench.report import Results, ScenarioResult, render_facts, render_floor
from bench.scenarios import Outcome


def test_the_floor_is_measured_and_leaves_nothing_behind(tmp_path: Path) -> None:
    floor = durable_commit_floor(tmp_path / "work", rounds=20)
    assert 0 < floor["p50"] <= floor["p95"]
    assert list((tmp_path / "work").iterdir()) == []


def test_send_is_reported_as_a_multiple_of_the_floor() -> None:
    results = Results(
        {"fsync_floor_p50_ms": 2.0, "fsync_floor_p95_ms": 5.0},
        {"Ranvier": {}, "Synapse": {}},
        {},
    )
    results.scenarios[SEND_TITLE] = {
        "Ranvier": ScenarioResult(outcomes=[Outcome({SEND_FIGURE: 3.0}, {})]),
        "Synapse": ScenarioResult(outcomes=[Outcome({SEND_FIGURE: 30.0}, {})]),
    }
    assert render_floor(results) == (
        "durable-commit floor (write + fsync, p50): 2.00 ms; "
        "send p50 (1 sender) as a multiple of it: Ranvier 1.5×, Synapse 15.0×"
    )
    assert "write + fsync p50 2.00 ms, p95 5.00 ms" in render_facts(results)
    assert send_over_floor(1.0, 0.0) == float("inf")
    results.machine.pop("fsync_floor_p50_ms")
    assert render_floor(results) == ""
