"""The ``account_data`` stream: global account data at the top level, room
account data for ``rooms.<join|leave>.<room>.account_data`` (sync.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.core.filters import filter_events
from ranvier.services.sync_providers.base import Section, SyncRequest

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


class AccountDataProvider:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    async def changes(self, request: SyncRequest) -> Section:
        # A full-state sync sends all of it again, as an initial one.
        initial = request.initial
        since = request.since
        changes = await self.hs.account_data.changes_for_user(
            request.user_id,
            0 if initial or since is None else since.account_data,
            request.now.account_data,
            initial=initial,
        )
        global_events = filter_events(request.filter.account_data, changes.global_events)
        return Section(
            fields={"account_data": {"events": global_events}},
            room_account_data=changes.room_events,
            has_updates=bool(global_events),
        )
