"""Typing notifications (Client-Server API, "Typing Notifications").

Ephemeral, so in memory only: per room, who is typing until when. A change
(start, stop, or a timeout running out) advances this service's own counter
and records it as the room's latest position; /sync reads
:meth:`current_position` and :meth:`changes_for_user`.

Timeouts expire without any further request: a timer set for the earliest
expiry removes the user and wakes the room's members, and every read expires
what is due first (so a fake clock in tests needs no timer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ranvier.core.ids import is_my_user_id
from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: Synapse caps a typing timeout at 2 minutes and uses 30 s when none is given.
MAX_TIMEOUT_MS = 120_000
DEFAULT_TIMEOUT_MS = 30_000


class TypingService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self._position = 0
        # room_id -> user_id -> expiry (ms since the epoch)
        self._typing: dict[str, dict[str, int]] = {}
        # room_id -> position of the room's latest change
        self._room_positions: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def set_typing(
        self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None = None
    ) -> None:
        """``user_id`` (already authorised as the requester) starts or stops typing.

        403 ``M_FORBIDDEN`` unless joined to the room (as Synapse).
        """
        if await self.hs.rooms.get_membership(room_id, user_id) != "join":
            raise MatrixError(403, "M_FORBIDDEN", f"User {user_id} not in room {room_id}")
        self._expire()
        now = self.hs.clock_ms()
        users = self._typing.get(room_id, {})
        if typing:
            timeout = DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
            was_typing = user_id in users
            self._typing.setdefault(room_id, {})[user_id] = now + min(timeout, MAX_TIMEOUT_MS)
            self._schedule()
            # Other servers time typing out themselves: renewals go to them too.
            await self._federate(room_id, user_id, typing)
            if was_typing:
                return  # only the expiry moved: nothing a client sees changed
        else:
            if user_id not in users:
                return
            del users[user_id]
            if not users:
                del self._typing[room_id]
            await self._federate(room_id, user_id, typing)
        self._changed(room_id)
        await self._notify_room(room_id)

    async def _federate(self, room_id: str, user_id: str, typing: bool) -> None:
        """m.typing to the other servers in the room, for our own users only."""
        federation_edus = getattr(self.hs, "federation_edus", None)
        if federation_edus is not None and is_my_user_id(user_id, self.hs.server_name):
            await federation_edus.on_local_typing(room_id, user_id, typing)

    def typing_user_ids(self, room_id: str) -> list[str]:
        """Who is typing in ``room_id`` now, sorted."""
        self._expire()
        return sorted(self._typing.get(room_id, {}))

    # --- /sync provider ------------------------------------------------------------

    def current_position(self) -> int:
        """This service's counter (in memory: restarts at 0 with the process)."""
        self._expire()
        return self._position

    async def changes_for_user(
        self,
        user_id: str,
        from_pos: int,
        to_pos: int,
        room_ids: Collection[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """``{room_id: {"type": "m.typing", "content": {"user_ids": [...]}}}`` for each
        room (of ``room_ids``, default the user's joined rooms) whose typing list
        changed after ``from_pos``; ``from_pos`` 0 gives every room where someone
        is typing. The list is the *current* one (typing keeps no history), so a
        change after ``to_pos`` shows its newer list; clients replace the list
        wholesale, so that is harmless.

        A ``from_pos`` above the current position (the process restarted and
        the counter with it) is treated as 0.
        """
        self._expire()
        if from_pos > self._position:
            from_pos = 0
        if from_pos == self._position:
            return {}  # nothing changed anywhere (the common case)
        if room_ids is None:
            room_ids = await self.hs.rooms.joined_room_ids(user_id)
        result: dict[str, dict[str, Any]] = {}
        for room_id in room_ids:
            position = self._room_positions.get(room_id)
            if position is None or position <= from_pos:
                continue
            typing = sorted(self._typing.get(room_id, {}))
            if from_pos == 0 and not typing:
                continue
            result[room_id] = {"type": "m.typing", "content": {"user_ids": typing}}
        return result

    # --- expiry --------------------------------------------------------------------

    def _changed(self, room_id: str) -> None:
        self._position += 1
        self._room_positions[room_id] = self._position

    def _expire(self) -> list[str]:
        """Drop every typing entry that is due; the rooms that changed."""
        now = self.hs.clock_ms()
        changed: list[str] = []
        for room_id in list(self._typing):
            users = self._typing[room_id]
            expired = [user for user, until in users.items() if until <= now]
            if not expired:
                continue
            for user in expired:
                del users[user]
            if not users:
                del self._typing[room_id]
            self._changed(room_id)
            changed.append(room_id)
        if changed:
            for room_id in changed:
                self._spawn_notify(room_id)
        return changed

    def _schedule(self) -> None:
        """Arm the timer for the earliest expiry (re-armed after each firing)."""
        earliest = min(
            (until for users in self._typing.values() for until in users.values()), default=None
        )
        if earliest is None:
            self._cancel_timer()
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= earliest:
            return
        self._cancel_timer()
        delay_s = max(earliest - self.hs.clock_ms(), 0) / 1000 + 0.001
        self._timer_at = earliest
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._expire()
        self._schedule()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _spawn_notify(self, room_id: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._notify_room_logged(room_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify_room(self, room_id: str) -> None:
        members = await self.hs.rooms.joined_user_ids(room_id)
        self.hs.notifier.notify_users(members)

    async def _notify_room_logged(self, room_id: str) -> None:
        try:
            await self._notify_room(room_id)
        except Exception:
            logger.exception("Could not wake the members of %s after a typing timeout", room_id)

    async def close(self) -> None:
        self._cancel_timer()
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
