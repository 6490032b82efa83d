"""Test doubles for outbound federation: a fake DNS, a test CA, HTTPS servers on loopback."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiohttp import web

from ranvier.services.federation.dns import SrvRecord


@dataclass
class FakeDns:
    """Fixed SRV records and addresses; records every query it answers."""

    srv_records: dict[str, list[SrvRecord]] = field(default_factory=dict)
    hosts: dict[str, list[str]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)

    async def srv(self, name: str) -> list[SrvRecord]:
        self.queries.append(f"SRV {name}")
        return self.srv_records.get(name, [])

    async def addresses(self, host: str) -> list[str]:
        self.queries.append(f"A {host}")
        if host not in self.hosts:
            raise OSError(f"no address for {host}")
        return self.hosts[host]


class MidpointRandom(random.Random):
    """No jitter: ``uniform(a, b)`` is the middle, so cache periods are exact."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_ca(ca: trustme.CA, folder: Path) -> Path:
    path = folder / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def write_server_cert(ca: trustme.CA, folder: Path, *names: str) -> tuple[Path, Path]:
    """(certificate chain file, private key file) for ``names``, signed by ``ca``."""
    cert = ca.issue_cert(*names)
    chain, key = folder / "server-chain.pem", folder / "server-key.pem"
    with chain.open("wb") as file:
        for blob in cert.cert_chain_pems:
            file.write(blob.bytes())
    cert.private_key_pem.write_to_path(str(key))
    return chain, key


@asynccontextmanager
async def https_server(
    app: web.Application, context: ssl.SSLContext, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve ``app`` over TLS on ``host`` (loopback); yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def connection_recorder() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP listener on 127.0.0.1 that records and closes every connection: (port, log)."""
    connections: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        await server.wait_closed()
