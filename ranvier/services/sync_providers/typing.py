"""The ``typing`` stream: ``m.typing`` of the joined rooms whose typing list
changed (``rooms.join.<room>.ephemeral``).

Typing lives in memory (ranvier/services/typing.py) and restarts at 0 with the
process; the token slot is ``epoch + position`` (ranvier/services/sync_tokens.py),
so a slot this process did not issue reads as 0: "send the current lists".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.services.sync_providers.base import Section, SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class TypingProvider:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        # The wall clock (ms) when this process started: see the module docstring.
        self.epoch = hs.clock_ms()

    def current_slot(self) -> int:
        return self.epoch + self.hs.typing.current_position()

    def position(self, slot: int) -> int:
        """The in-memory position a token's slot stands for (0 if not ours)."""
        position = slot - self.epoch
        if position < 0 or position > self.hs.typing.current_position():
            return 0
        return position

    async def changes(self, request: SyncRequest) -> Section:
        since = request.since
        typing = await self.hs.typing.changes_for_user(
            request.user_id,
            0 if since is None else self.position(since.typing),
            request.now.typing - self.epoch,
            request.memberships.joined_room_ids,
        )
        return Section(ephemeral={room_id: [event] for room_id, event in typing.items()})
