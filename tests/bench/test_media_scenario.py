"""The benchmark's media scenario (11, bench/media.py) runs against Ranvier
alone with tiny sizes and reports every figure. No timing assertions: this
checks the harness, not the server's speed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from bench.media import MEDIA_SCENARIO
from bench.report import render_table
from bench.run import Options, Runner
from bench.scenarios import QUICK

pytestmark = pytest.mark.bench


async def test_media_scenario_runs_against_ranvier(tmp_path: Path) -> None:
    sizes = replace(
        QUICK, media_uploads=1, media_downloads=3, media_thumbnails=1, media_concurrent_uploads=2
    )
    options = Options(
        sizes=sizes,
        quick=True,
        servers=("Ranvier",),
        scenarios=(MEDIA_SCENARIO.key,),
        work_dir=tmp_path / "work",
        results_dir=None,
        log=False,
    )
    async with aiohttp.ClientSession() as session:
        runner = Runner(options, session)
        results = await runner.run()
        assert runner.running == []

    result = results.scenarios[MEDIA_SCENARIO.title]["Ranvier"]
    assert (result.status, result.detail) == ("ok", "")
    figures = result.figures()
    assert set(figures) == {
        "10 MiB upload, median (MiB/s)",
        "1 MiB download p50 (ms)",
        "1 MiB download p95 (ms)",
        "1 MiB download p99 (ms)",
        "fresh 2000×1500 JPEG thumbnail p50 (ms)",
        "upload + first thumbnail p50 (ms)",
        "RSS before 2 concurrent 10 MiB uploads (MiB)",
        "peak RSS during them (MiB)",
        "2 × 10 MiB concurrent (MiB/s)",
    }
    assert all(isinstance(value, float) and value > 0 for value in figures.values())
    assert "| 11 media" in render_table(results)
