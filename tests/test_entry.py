"""The ``ranvier`` command's entry point: no garbage collection while the server
starts, the collector on again (with startup's objects frozen) once it listens;
every other command runs with the collector on (ranvier/entry.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ranvier.cli import cli
from ranvier.entry import startup_done
from tests.e2e.harness import free_port

# Runs the real entry point in a fresh interpreter; a thread waits for
# /versions, reports the collector's state, then stops the server.
SERVE_AND_REPORT = """
import gc, os, signal, sys, threading, time, urllib.request

url, config = sys.argv[1], sys.argv[2]

def watch() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            break
        except OSError:
            time.sleep(0.02)
    print("enabled", gc.isenabled(), "frozen", gc.get_freeze_count(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

print("before", gc.isenabled(), flush=True)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["ranvier", "serve", "--config", config]
from ranvier.entry import main
main()
"""


@pytest.fixture
def collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_serve_collects_again_once_listening_with_startup_frozen(tmp_path: Path) -> None:
    config = tmp_path / "ranvier.yaml"
    assert CliRunner().invoke(cli, ["init", "--config", str(config)]).exit_code == 0
    port = free_port()
    env = {**os.environ, "RANVIER_LISTEN_PORT": str(port)}
    completed = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT, f"http://127.0.0.1:{port}/_matrix/client/versions",
         str(config)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.split("\n")
    assert lines[0] == "before True"
    words = lines[1].split()
    assert words[:2] == ["enabled", "True"]
    # Everything startup built (tens of thousands of objects) is out of the
    # collector's generations; a server that never froze would report 0.
    assert words[2] == "frozen" and int(words[3]) > 10_000


def test_other_commands_run_with_the_collector_on(
    tmp_path: Path, collector_restored: None
) -> None:
    gc.disable()  # as ranvier.entry.main leaves it
    result = CliRunner().invoke(cli, ["init", "--config", str(tmp_path / "r.yaml")])
    assert result.exit_code == 0, result.output
    assert gc.isenabled()


def test_startup_done_freezes_only_after_a_startup_without_collection(
    collector_restored: None,
) -> None:
    gc.unfreeze()
    gc.enable()
    startup_done()  # the collector was on: nothing to freeze (an embedding program's choice)
    assert gc.get_freeze_count() == 0
    gc.disable()
    startup_done()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
