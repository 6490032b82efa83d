"""Running real `ranvier` processes for end-to-end tests.

``Server`` starts `ranvier serve` on a loopback port with RANVIER_* overrides;
``init_config`` runs `ranvier init`; ``postgres_database`` makes a fresh
PostgreSQL database for one test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg

from tests.conftest import POSTGRES_DSN, drop_databases_in_background

# Generous: on a loaded machine (CI beside other jobs) a first start that
# migrates a fresh PostgreSQL schema has taken more than 15 s.
STARTUP_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 10


def ranvier_command() -> list[str]:
    """The installed `ranvier` script beside this Python, else `python -m ranvier`."""
    script = Path(sys.executable).parent / "ranvier"
    if script.exists():
        return [str(script)]
    found = shutil.which("ranvier")
    return [found] if found else [sys.executable, "-m", "ranvier"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**overrides: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RANVIER_")}
    env.update(overrides)
    return env


class Server:
    def __init__(self, config_path: Path, port: int, **env: str) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = config_path.parent / f"serve-{port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*ranvier_command(), "serve", "--config", str(config_path)],
            env=clean_env(RANVIER_LISTEN_PORT=str(port), **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ranvier serve exited early:\n{self.log()}")
            try:
                async with session.get(f"{self.base_url}/_matrix/client/versions") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"ranvier serve did not answer in time:\n{self.log()}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def init_config(folder: Path) -> Path:
    path = folder / "ranvier.yaml"
    subprocess.run(
        [*ranvier_command(), "init", "--config", str(path)],
        env=clean_env(),
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """The DSN of a new, empty PostgreSQL database, dropped afterwards (in the
    background: a DROP DATABASE waits for a checkpoint, seconds on a busy machine)."""
    name = f"ranvier_e2e_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        base = POSTGRES_DSN.rsplit("/", 1)[0]
        yield f"{base}/{name}"
    finally:
        drop_databases_in_background([name])
