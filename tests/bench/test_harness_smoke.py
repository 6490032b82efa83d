"""The benchmark harness runs: scenario 1 (startup) against Ranvier only, tiny sizes.

No timing assertions: this checks the harness (start, measure, stop, report),
not the server's speed. It needs neither Synapse nor matplotlib.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from bench.report import render_table
from bench.run import STARTUP, Options, Runner
from bench.scenarios import QUICK

pytestmark = pytest.mark.bench


async def test_startup_scenario_runs_against_ranvier(tmp_path: Path) -> None:
    options = Options(
        sizes=replace(QUICK, startup_repeats=1, idle_settle_s=0.1),
        quick=True,
        servers=("Ranvier",),
        scenarios=("startup",),
        work_dir=tmp_path / "work",
        results_dir=None,
        log=False,
    )
    async with aiohttp.ClientSession() as session:
        runner = Runner(options, session)
        results = await runner.run()
        assert runner.running == []  # the server was stopped

    assert list(results.servers) == ["Ranvier"]
    assert results.machine["cpu_count"] >= 1
    result = results.scenarios[STARTUP]["Ranvier"]
    assert (result.status, result.detail) == ("ok", "")
    figures = result.figures()
    assert set(figures) == {"process start → first /versions (s)", "idle RSS 0.1 s later (MiB)"}
    assert all(isinstance(value, float) and value > 0 for value in figures.values())

    table = render_table(results)
    assert "| 1 startup" in table
    assert "process start → first /versions (s)" in table
    assert results.to_json()["scenarios"][STARTUP]["Ranvier"]["status"] == "ok"
