"""The ``ranvier`` command imports aiohttp without loading the system CAs into
aiohttp's default client contexts (ranvier/entry.py: 30-40 ms of every start),
and every client session the server makes passes a context of its own that
does trust them: federation, push gateways and URL previews."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import ssl
from ranvier.entry import _import_aiohttp

_import_aiohttp()
import aiohttp.connector as connector

# aiohttp's defaults trust nothing (any use fails closed) ...
print(connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"])
print(connector._SSL_CONTEXT_VERIFIED.verify_mode == ssl.CERT_REQUIRED)
# ... and loading the system's CAs works again once aiohttp is imported.
print(ssl.create_default_context().cert_store_stats()["x509_ca"] > 0)
print(ssl.SSLContext.load_default_certs.__module__, ssl.SSLContext.set_default_verify_paths)
"""


def test_aiohttps_default_contexts_trust_no_ca_and_ssl_is_restored() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1] == "True"
    # The system's CA bundle is on this machine (ca-certificates): the restored
    # methods load it, so this checks the restore, not an empty store.
    assert lines[2] == "True"
    assert lines[3].startswith("ssl <method 'set_default_verify_paths'")


SESSIONS = """
import asyncio
import ssl
import tempfile
from pathlib import Path

from ranvier.entry import _import_aiohttp

_import_aiohttp()
from ranvier.config import parse_config
from ranvier.services.federation.client import build_session
from ranvier.services.federation.dns import SystemDns
from ranvier.services.media.preview import UrlPreviewer
from ranvier.services.push_delivery import PushDelivery


def cas(session):
    # aiohttp's default (True) when the session passes none of its own.
    context = session.connector._ssl
    return context.cert_store_stats()["x509_ca"] if isinstance(context, ssl.SSLContext) else -1


async def main():
    config = parse_config({}, Path(tempfile.mkdtemp()), env={})
    federation = build_session(config.federation, SystemDns())
    push = PushDelivery(config.push, lookup=lambda key: None, on_rejected=None)
    preview = UrlPreviewer.__new__(UrlPreviewer)
    preview._dns, preview.deny, preview._session = SystemDns(), lambda address: True, None
    for session in (federation, push._client(), preview._get_session()):
        print(cas(session) > 0)
        await session.close()


asyncio.run(main())
"""


def test_every_client_session_of_the_server_trusts_the_system_cas() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SESSIONS], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["True", "True", "True"]
