"""What a started server holds: libraries that many servers never use wait
for their first use.

Resident memory is a benchmark figure (docs/performance.md): bcrypt loads at
the first password hash imported from Synapse, asyncpg only for PostgreSQL
(3.4 MiB), dnspython at the first federation SRV lookup (3 MiB),
prometheus-client only with ``metrics.enabled`` (1.7 MiB). This checks a fresh
interpreter after the app has started on SQLite (database open, every service
built), so a new top-level import brings them back loudly. (Libraries every server soon uses, PyNaCl for signing events and
argon2 for logins, load at startup: deferring them would only move the cost.)
"""

from __future__ import annotations

import subprocess
import sys

# Top-level package names as they appear in sys.modules.
LOADED_ON_FIRST_USE = ("bcrypt", "asyncpg", "dns", "prometheus_client", "PIL")  # PIL: the first thumbnail

STARTED_APP_MODULES = """
import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp import web

import ranvier.cli
from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey


async def main() -> None:
    config = parse_config({"database": "sqlite:///:memory:"}, Path(tempfile.mkdtemp()), env={})
    runner = web.AppRunner(build_app(config, signing_key=SigningKey("t", bytes(32))))
    await runner.setup()  # runs the startup hooks: database, migrations, services
    try:
        print(" ".join(sorted(sys.modules)))
    finally:
        await runner.cleanup()


asyncio.run(main())
"""


def _started_app_modules() -> list[str]:
    """The modules a fresh process holds once the app is built and listening."""
    completed = subprocess.run(
        [sys.executable, "-c", STARTED_APP_MODULES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.split()


def test_a_started_server_has_not_imported_what_only_a_first_use_needs() -> None:
    modules = _started_app_modules()
    assert "ranvier.homeserver" in modules
    assert [name for name in modules if name.split(".")[0] in LOADED_ON_FIRST_USE] == []


# Ranvier's own modules that a start does not need: the media and search
# services are built at their first use (ranvier/homeserver.py), so importing
# them costs no start (~6 ms for media with URL previews, ~1.5 ms for search).
RANVIER_MODULES_LOADED_ON_FIRST_USE = (
    "ranvier.services.media.service",
    "ranvier.services.media.preview",
    "ranvier.services.media.remote",
    "ranvier.storage.media",
    "ranvier.services.search",
)


def test_a_started_server_has_not_imported_the_services_built_at_first_use() -> None:
    modules = set(_started_app_modules())
    assert "ranvier.api.client.media" in modules  # the routes are registered
    assert sorted(modules.intersection(RANVIER_MODULES_LOADED_ON_FIRST_USE)) == []
