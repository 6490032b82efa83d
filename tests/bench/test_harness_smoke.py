"""The benchmark harness runs: scenarios 1 (startup), 9 (soak) and 11 (search) against Ranvier only,
tiny sizes.

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
from bench.scenarios import QUICK, SEARCH, SEARCH_QUERIES, SOAK, SOAK_RSS, SOAK_TIMES

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


async def test_soak_scenario_reports_rss_per_round(tmp_path: Path) -> None:
    rounds = 2
    sizes = replace(
        QUICK,
        soak_pollers=3,
        soak_senders=1,
        soak_send_interval_s=0.2,
        soak_rounds=rounds,
        soak_round_s=1.0,
        soak_sample_interval_s=0.25,
    )
    options = Options(
        sizes=sizes,
        quick=True,
        servers=("Ranvier",),
        scenarios=("soak",),
        work_dir=tmp_path / "work",
        results_dir=None,
        log=False,
    )
    async with aiohttp.ClientSession() as session:
        runner = Runner(options, session)
        results = await runner.run()
        assert runner.running == []  # the soak's fresh server was stopped

    assert list(results.scenarios) == [SOAK.title]
    result = results.scenarios[SOAK.title]["Ranvier"]
    assert (result.status, result.detail) == ("ok", "")
    figures = result.figures()
    round_figures = [f"RSS after round {n} of 1 s (MiB)" for n in range(1, rounds + 1)]
    assert list(figures) == [
        "RSS before the traffic (MiB)",
        *round_figures,
        "RSS growth in the last round (MiB)",
        "peak RSS (MiB)",
        "messages sent per round (mean)",
        "/sync answers per round (mean)",
    ]
    rss = [figures["RSS before the traffic (MiB)"], *(figures[name] for name in round_figures)]
    assert all(isinstance(value, float) and value > 10 for value in rss)
    assert figures["RSS growth in the last round (MiB)"] == pytest.approx(rss[-1] - rss[-2])
    assert figures["peak RSS (MiB)"] >= max(rss[1:])
    # One sender, at most one message per 0.2 s; each wakes the long-polls of its room.
    assert isinstance(figures["messages sent per round (mean)"], float)
    assert 1 <= figures["messages sent per round (mean)"] <= 6
    assert isinstance(figures["/sync answers per round (mean)"], float)
    assert figures["/sync answers per round (mean)"] >= 1
    samples = result.samples()
    assert len(samples[SOAK_RSS]) == len(samples[SOAK_TIMES]) >= rounds * 3
    assert samples[SOAK_TIMES] == sorted(samples[SOAK_TIMES])
    assert "| 9 soak" in render_table(results)


async def test_search_scenario_runs_against_ranvier(tmp_path: Path) -> None:
    sizes = replace(QUICK, search_messages=40, search_queries=2, search_index_messages=20)
    options = Options(
        sizes=sizes,
        quick=True,
        servers=("Ranvier",),
        scenarios=("search",),
        work_dir=tmp_path / "work",
        results_dir=None,
        log=False,
    )
    async with aiohttp.ClientSession() as session:
        runner = Runner(options, session)
        results = await runner.run()
        # The main phase's server was stopped.
        assert all(s.process is None or s.process.poll() is not None for s in runner.running)

    result = results.scenarios[SEARCH.title]["Ranvier"]
    assert (result.status, result.detail) == ("ok", "")
    figures = result.figures()
    assert list(figures) == [
        "/search, all queries p50 (ms)",
        "/search, all queries p95 (ms)",
        "/search, all queries p99 (ms)",
        *(f"{label} p50 (ms)" for label, _ in SEARCH_QUERIES),
        "DB growth per message from the index (bytes)",
    ]
    assert all(isinstance(value, float) for value in figures.values())
    assert len(result.samples()["/search (ms)"]) == 2 * len(SEARCH_QUERIES)
    assert "| 12 search" in render_table(results)
