"""A push gateway for tests (Push Gateway API, POST /_matrix/push/v1/notify),
served on loopback by aiohttp's test server; it records what it receives.

Use the ``gateway`` fixture (import ``gateway_fixture`` into the test module).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

NOTIFY = "/_matrix/push/v1/notify"
#: Push config for tests: http:// and loopback gateways, fast retries.
FAST_PUSH = {
    "allow_http_gateways": True,
    "allow_private_addresses": True,
    "retry_initial_delay": 20,
    "retry_max_delay": 100,
    "request_timeout": 500,
}


@dataclass
class Gateway:
    """A push gateway: records every request body; answers each with the next
    scripted behaviour ("ok", "500", "garbage", "hang", "reject"), then "ok"."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set at teardown: hanging requests end, so the server can stop.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        self.changed.set()
        behaviour = self.script.popleft() if self.script else "ok"
        if behaviour == "500":
            return web.json_response({"error": "down"}, status=500)
        if behaviour == "garbage":
            return web.Response(body=b"<html>oops", content_type="text/html")
        if behaviour == "hang":
            await self.release.wait()
            return web.json_response({"error": "too late"}, status=503)
        if behaviour == "reject":
            pushkeys = [d["pushkey"] for d in body["notification"]["devices"]]
            return web.json_response({"rejected": pushkeys})
        return web.json_response({"rejected": []})

    async def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The first ``count`` requests, once that many arrived."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"gateway got {len(self.received)} of {count} requests"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return self.received[:count]

    def notifications(self, pushkey: str) -> list[dict[str, Any]]:
        return [
            body["notification"]
            for body in self.received
            if body["notification"]["devices"][0]["pushkey"] == pushkey
        ]


@pytest.fixture(name="gateway")
async def gateway_fixture(aiohttp_server: Any) -> AsyncIterator[Gateway]:
    recorder = Gateway()
    app = web.Application()
    app.router.add_post(NOTIFY, recorder.handle)
    server = await aiohttp_server(app)
    recorder.url = str(server.make_url(NOTIFY))
    yield recorder
    recorder.release.set()
