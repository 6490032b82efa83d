"""`ranvier reports list`: content reports for administrators, newest first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ranvier.cli import cli
from ranvier.config import load_config
from ranvier.storage import open_database
from ranvier.storage.reports import ReportStore

TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    path = tmp_path / "ranvier.yaml"
    path.write_text(
        'server_name: "example.org"\ndatabase: "sqlite:///data/hs.db"\n', encoding="utf-8"
    )
    return path


def _add_reports(config_path: Path) -> None:
    async def add() -> None:
        db = await open_database(load_config(config_path, env={}).database)
        try:
            store = ReportStore(db)
            await store.add(
                received_ts=TS,
                reporter="@alice:example.org",
                kind="event",
                room_id="!r:example.org",
                event_id="$e",
                target_user_id="@bob:example.org",
                reason="spam\nfake line",
                score=-50,
            )
            await store.add(
                received_ts=TS + 1000,
                reporter="@carol:example.org",
                kind="room",
                room_id="!r:example.org",
                reason="",
            )
            await store.add(
                received_ts=TS + 2000,
                reporter="@alice:example.org",
                kind="user",
                target_user_id="@eve:elsewhere",
                reason="rude",
            )
        finally:
            await db.close()

    asyncio.run(add())


def _run(config_path: Path, *args: str) -> list[str]:
    result = CliRunner().invoke(cli, ["reports", "list", *args, "--config", str(config_path)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_lists_newest_first_one_line_each(config_path: Path) -> None:
    _add_reports(config_path)
    assert _run(config_path) == [
        '#3  2023-11-14T22:13:22Z  user  by @alice:example.org  user @eve:elsewhere  reason "rude"',
        '#2  2023-11-14T22:13:21Z  room  by @carol:example.org  room !r:example.org  reason ""',
        "#1  2023-11-14T22:13:20Z  event  by @alice:example.org  room !r:example.org  "
        'event $e  user @bob:example.org  score -50  reason "spam\\nfake line"',
    ]


def test_limit_before_and_json(config_path: Path) -> None:
    _add_reports(config_path)
    assert [line.split()[0] for line in _run(config_path, "--limit", "1")] == ["#3"]
    assert [line.split()[0] for line in _run(config_path, "--before", "3")] == ["#2", "#1"]
    rows = [json.loads(line) for line in _run(config_path, "--json", "--before", "2")]
    assert rows == [
        {
            "id": 1,
            "received_ts": TS,
            "reporter": "@alice:example.org",
            "kind": "event",
            "room_id": "!r:example.org",
            "event_id": "$e",
            "target_user_id": "@bob:example.org",
            "reason": "spam\nfake line",
            "score": -50,
        }
    ]


def test_no_reports_prints_nothing(config_path: Path) -> None:
    assert _run(config_path) == []


def test_bad_limit_is_refused(config_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["reports", "list", "--limit", "0", "--config", str(config_path)]
    )
    assert result.exit_code == 2
    assert "--limit" in result.output
