"""HTTP push delivery: one ordered queue per pusher, posting to its push gateway.

Push Gateway API, "Homeserver behaviour": each notification is one
``POST /_matrix/push/v1/notify`` carrying the pusher as its only device. A
pusher's notifications go out one at a time, in order. A failure (no
connection, a timeout, a non-2xx answer, an answer that is not a JSON object)
is retried "for a reasonable amount of time using exponential backoff":
``push.retry_initial_delay`` doubling up to ``push.retry_max_delay``, and a
notification still failing after ``push.give_up_after`` is dropped, as
Synapse's HTTP pusher does (the next one carries current counts). Pushkeys the
gateway lists in ``rejected`` "must cease" being pushed to: their pushers are
deleted.

Everything here runs in background tasks: whoever enqueues never waits for a
gateway. The queues live in memory: notifications still queued when the
process stops are not sent after a restart (the counts a client syncs are not
affected; the next push carries them). Connections pass the federation SSRF guard
(``services/federation/address_guard.py``) unless ``push.allow_private_addresses``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import aiohttp
import orjson
from yarl import URL

from ranvier.config import PushConfig
from ranvier.services.federation.address_guard import GuardedResolver, check_ip_literal
from ranvier.services.federation.dns import Dns, SystemDns
from ranvier.services.outbound import USER_AGENT, outbound_ssl_context
from ranvier.storage.pushers import Pusher

logger = logging.getLogger(__name__)

PusherKey = tuple[str, str, str]  # (user_id, app_id, pushkey)
#: A pusher's backlog while its gateway is down; beyond it the oldest
#: notifications are dropped (later ones carry the current counts).
MAX_QUEUED_PER_PUSHER = 1000
#: A gateway's answer is a small JSON object; more than this is not one.
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class PushRequest:
    """One notification for one pusher, before its ``devices`` entry is added:
    ``notification`` holds the event fields and ``counts``; ``tweaks`` come from
    the push rule's actions."""

    notification: dict[str, Any]
    tweaks: dict[str, Any]


class Outcome(Enum):
    SENT = "sent"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass
class _Item:
    request: PushRequest
    first_attempt: float | None = None


@dataclass
class _Queue:
    items: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


def device_entry(pusher: Pusher, tweaks: dict[str, Any]) -> dict[str, Any]:
    """The pusher as a ``devices`` item of /notify: its ``data`` minus ``url``
    (Client-Server API, POST /pushers/set: "Servers MUST forward the entire
    content including format and any custom keys but excluding url")."""
    return {
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts // 1000,  # seconds, as the spec says
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
        "tweaks": tweaks,
    }


def notify_body(pusher: Pusher, request: PushRequest) -> dict[str, Any]:
    return {
        "notification": {
            **request.notification,
            "devices": [device_entry(pusher, request.tweaks)],
        }
    }


class PushDelivery:
    """The per-pusher queues. ``lookup`` gives a pusher's current row (None once
    deleted); ``on_rejected`` deletes a pusher the gateway rejected."""

    def __init__(
        self,
        config: PushConfig,
        *,
        lookup: Callable[[PusherKey], Pusher | None],
        on_rejected: Callable[[Pusher], Awaitable[None]],
        dns: Dns | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._lookup = lookup
        self._on_rejected = on_rejected
        self._dns = dns if dns is not None else SystemDns()
        self._clock = clock
        self._queues: dict[PusherKey, _Queue] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # --- queues ----------------------------------------------------------------------

    def enqueue(self, key: PusherKey, request: PushRequest) -> None:
        """Queue a notification for one pusher and make sure its worker runs."""
        if self._closed:
            return
        queue = self._queues.setdefault(key, _Queue())
        queue.items.append(_Item(request))
        while len(queue.items) > MAX_QUEUED_PER_PUSHER:
            queue.items.popleft()
            logger.warning("push backlog of %s full: dropped its oldest notification", key)
        if queue.task is None or queue.task.done():
            queue.task = asyncio.get_running_loop().create_task(self._run(key, queue))

    def pending(self, key: PusherKey) -> int:
        """How many notifications wait for this pusher (the one being tried included)."""
        queue = self._queues.get(key)
        return 0 if queue is None else len(queue.items)

    def forget(self, key: PusherKey) -> None:
        """Drop a deleted pusher's queue and stop its worker."""
        queue = self._queues.pop(key, None)
        if queue is not None and queue.task is not None:
            queue.task.cancel()

    async def close(self) -> None:
        self._closed = True
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queues.clear()
        if self._session is not None:
            await self._session.close()

    async def _run(self, key: PusherKey, queue: _Queue) -> None:
        delay = self._config.retry_initial_delay / 1000
        while queue.items:
            pusher = self._lookup(key)
            if pusher is None:
                queue.items.clear()
                break
            item = queue.items[0]
            if item.first_attempt is None:
                item.first_attempt = self._clock()
            outcome = await self.post(pusher, item.request)
            if outcome is Outcome.REJECTED:
                queue.items.clear()
                await self._on_rejected(pusher)
                break
            if outcome is Outcome.SENT or self._gave_up(item):
                queue.items.popleft()
                delay = self._config.retry_initial_delay / 1000
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._config.retry_max_delay / 1000)
        if self._queues.get(key) is queue and not queue.items:
            del self._queues[key]

    def _gave_up(self, item: _Item) -> bool:
        assert item.first_attempt is not None
        if self._clock() - item.first_attempt < self._config.give_up_after / 1000:
            return False
        logger.warning("giving up on a push notification after %s ms", self._config.give_up_after)
        return True

    # --- HTTP ------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(
                    self._dns, allow_private=self._config.allow_private_addresses
                ),
                ssl=outbound_ssl_context(None),
            )
            # No proxy from the environment and no redirects (below): either would
            # take the request around the SSRF guard.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def post(self, pusher: Pusher, request: PushRequest) -> Outcome:
        """One attempt at ``POST /_matrix/push/v1/notify``."""
        url = URL(str(pusher.data.get("url", "")))
        try:
            check_ip_literal(url.host or "", allow_private=self._config.allow_private_addresses)
            answer = await self._post_json(url, notify_body(pusher, request))
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.info("push to %s failed, will retry: %r", url.host, exc)
            return Outcome.FAILED
        rejected = answer.get("rejected")
        if isinstance(rejected, list) and pusher.pushkey in rejected:
            return Outcome.REJECTED
        return Outcome.SENT

    async def _post_json(self, url: URL, body: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self._config.request_timeout / 1000)
        async with self._client().post(
            url,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            if not 200 <= response.status < 300:
                raise ValueError(f"gateway answered HTTP {response.status}")
            raw = bytearray()
            async for chunk in response.content.iter_chunked(16 * 1024):
                raw += chunk
                if len(raw) > MAX_ANSWER_BYTES:
                    raise ValueError("gateway answer too large")
        answer = orjson.loads(raw)  # orjson.JSONDecodeError is a ValueError
        if not isinstance(answer, dict):
            raise ValueError("gateway answer is not a JSON object")
        return answer
