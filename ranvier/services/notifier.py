"""Wakes /sync long-polls when something a user can see changes.

Each user has a change counter. A sync reads ``version(user)`` *before* it
looks for changes; if it finds none it waits with ``wait(user, version,
timeout)``, which returns at once if the counter moved in between. So a change
that lands between the look and the wait is never missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Notifier:
    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        #: Long-polls woken by a change since start (the operator's /metrics).
        self.wakeups = 0

    def version(self, user_id: str) -> int:
        return self._versions.get(user_id, 0)

    def notify_users(self, user_ids: Iterable[str]) -> None:
        """Something changed for these users: wake their waiting syncs."""
        for user_id in user_ids:
            self._versions[user_id] = self._versions.get(user_id, 0) + 1
            for waiter in self._waiters.pop(user_id, ()):
                if not waiter.done():
                    waiter.set_result(None)
                    self.wakeups += 1

    def waiting(self) -> int:
        """Long-polls waiting now (read at each /metrics scrape, not per request)."""
        return sum(map(len, self._waiters.values()))

    def notify_room(self, room_id: str) -> None:
        """A new event in ``room_id``: wake those peeking into it without being
        members (``GET /events?room_id=``, Client-Server API "Room Previews"),
        who wait on the room ID (``!...``, never a user ID) as their key."""
        self.notify_users((room_id,))

    async def wait(self, user_id: str, since_version: int, timeout_s: float) -> bool:
        """Wait until ``user_id``'s counter passes ``since_version`` or the timeout.

        Returns True if something changed.
        """
        if self.version(user_id) != since_version:
            return True
        if timeout_s <= 0:
            return False
        loop = asyncio.get_running_loop()
        # A bare future and a timer (not wait_for and shield: three futures and
        # their callbacks per wait, for the 50 /syncs one message wakes).
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(timeout_s, _time_out, waiter)
        self._waiters.setdefault(user_id, set()).add(waiter)
        try:
            await waiter
            return self.version(user_id) != since_version  # woken, or the timer
        finally:
            timer.cancel()
            waiters = self._waiters.get(user_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[user_id]


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
