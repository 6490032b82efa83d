"""``GET /sync`` (Client-Server API, "Syncing"; sync.yaml): the front end.

DESIGN.md, "Streams": one provider per stream answers "what changed for this
user between positions A and B" (ranvier/services/sync_providers/); this module
composes them into a /sync v2 response, and handles tokens, filters' top-level
defaults and the long-poll. Another front end (simplified sliding sync,
MSC4186) reuses the same providers.

=================  ==========================================================
events             ``sync_providers/rooms.py``: rooms.join/leave/invite/knock
account_data       ``sync_providers/account_data.py``
receipts           ``sync_providers/receipts.py``
presence           ``sync_providers/presence.py``
typing             ``sync_providers/typing.py`` (in memory)
to_device          ``sync_providers/to_device.py`` (registered: E2EE)
device_lists       ``sync_providers/device_lists.py`` (registered: E2EE)
=================  ==========================================================

Tokens: ranvier/services/sync_tokens.py (re-exported here).

A long-poll (``timeout``) reads the notifier's per-user version *before*
looking for changes and, finding none, waits on it (``hs.notifier.wait``), so
a change that commits in between is never missed and nothing polls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ranvier.core.filters import DEFAULT_FILTER, Filter
from ranvier.services.sync_providers.account_data import AccountDataProvider
from ranvier.services.sync_providers.base import SyncProvider, SyncRequest
from ranvier.services.sync_providers.formatting import format_events
from ranvier.services.sync_providers.lazy_members import LazyMemberCache
from ranvier.services.sync_providers.memberships import (
    ALL_MEMBERSHIPS,
    RoomMemberships,
    load_memberships,
)
from ranvier.services.sync_providers.presence import PresenceProvider
from ranvier.services.sync_providers.receipts import ReceiptsProvider
from ranvier.services.sync_providers.rooms import RoomsProvider
from ranvier.services.sync_providers.timeline import (
    DEFAULT_TIMELINE_LIMIT,
    MAX_TIMELINE_LIMIT,
    timeline_limit,
)
from ranvier.services.sync_providers.typing import TypingProvider
from ranvier.services.sync_tokens import (
    DB_STREAMS,
    STREAMS,
    InvalidToken,
    SyncToken,
    pagination_token,
    parse_pagination_token,
)
from ranvier.storage.streams import current_stream_positions

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

__all__ = [
    "ALL_MEMBERSHIPS",
    "DEFAULT_TIMELINE_LIMIT",
    "MAX_TIMELINE_LIMIT",
    "MAX_TIMEOUT_MS",
    "STREAMS",
    "InvalidToken",
    "LazyMemberCache",
    "SyncParams",
    "SyncService",
    "SyncToken",
    "format_events",
    "pagination_token",
    "parse_pagination_token",
    "timeline_limit",
]

#: Longest accepted long-poll (Synapse does not cap; this bounds held requests).
MAX_TIMEOUT_MS = 10 * 60 * 1000


@dataclass(frozen=True, slots=True)
class SyncParams:
    user_id: str
    device_id: str | None
    filter: Filter = DEFAULT_FILTER
    since: SyncToken | None = None
    full_state: bool = False
    timeout_ms: int = 0
    #: None: the parameter was absent (the client is marked online).
    set_presence: str | None = None
    use_state_after: bool = False


def _empty_response(now: SyncToken) -> dict[str, Any]:
    """The response's top level, in order; the providers fill it in."""
    return {
        "next_batch": now.encode(),
        "account_data": {"events": []},
        "presence": {"events": []},
        "rooms": {"join": {}, "invite": {}, "leave": {}, "knock": {}},
        # Filled by the E2EE providers when registered.
        "to_device": {"events": []},
        "device_lists": {"changed": [], "left": []},
        "device_one_time_keys_count": {},
    }


class SyncService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.lazy_members = LazyMemberCache()
        self.account_data = AccountDataProvider(hs)
        self.presence = PresenceProvider(hs)
        self.typing = TypingProvider(hs)
        #: The streams besides rooms, in the order their per-room parts appear
        #: (``ephemeral``: typing, then receipts).
        self.providers: list[SyncProvider] = [
            self.account_data,
            self.presence,
            self.typing,
            ReceiptsProvider(hs),
        ]
        #: Runs last: it places the others' per-room parts.
        self.rooms = RoomsProvider(hs, self.lazy_members)

    def register_provider(self, provider: SyncProvider) -> None:
        """Add a stream's provider (to_device, device_lists... : e2e_sync.py)."""
        self.providers.append(provider)

    # --- tokens ------------------------------------------------------------------------

    async def current_token(
        self, *, evaluated_after: int | None = None, user_id: str | None = None
    ) -> SyncToken:
        """The current positions. With ``evaluated_after`` (a long-poll's
        ``since`` events position), the events stream only up to the events
        whose push rules are evaluated, but not before that position (a
        long-poll's view: services/push.py), so that a woken long-poll never
        waits for the evaluation of what it shows. ``user_id``'s own events
        need no evaluation (``PushService.visible_position``)."""
        positions = await current_stream_positions(self.hs.database, DB_STREAMS)
        push = getattr(self.hs, "push", None)
        if evaluated_after is not None and push is not None:
            events = positions["events"]
            visible = push.visible_position(events, user_id)
            positions["events"] = min(events, max(visible, evaluated_after))
        return SyncToken(typing=self.typing.current_slot(), **positions)

    @staticmethod
    def _clamp(since: SyncToken, now: SyncToken) -> SyncToken:
        """A token from the future (another database?) is read as "now"."""
        for name in DB_STREAMS:
            if getattr(since, name) > getattr(now, name):
                break
        else:
            return since  # the usual case: nothing to clamp (typing is kept as is)
        return SyncToken(
            *(
                min(getattr(since, name), getattr(now, name)) if name != "typing" else since.typing
                for name in STREAMS
            )
        )

    # --- entry point -------------------------------------------------------------------

    async def sync(self, params: SyncParams) -> dict[str, Any]:
        await self.hs.presence.set_presence_from_sync(params.user_id, params.set_presence)
        timeout_ms = min(max(params.timeout_ms, 0), MAX_TIMEOUT_MS)
        if params.since is None or params.full_state or timeout_ms == 0:
            response, _ = await self._sync_once(params)
            return response
        # A long-poll: what it shows is evaluated (see current_token).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            version = self.hs.notifier.version(params.user_id)
            # Every stream still at the token's position: nothing can have
            # changed for anyone, so wait before computing an answer that would
            # be empty (as Synapse does). A client long-polls again right after
            # each answer; this spares that whole computation, one query instead.
            now = await self.current_token(
                evaluated_after=params.since.events, user_id=params.user_id
            )
            idle = params.since == now
            if not idle:
                # The positions just read are this answer's (no second read).
                response, has_updates = await self._sync_once(params, evaluated=True, now=now)
                if has_updates:
                    return response
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.hs.notifier.wait(
                params.user_id, version, remaining
            ):
                return (await self._sync_once(params, evaluated=True))[0] if idle else response

    async def request_for(
        self, params: SyncParams, *, evaluated: bool = False, now: SyncToken | None = None
    ) -> SyncRequest:
        """The positions, the range and the user's rooms of one sync (``now``:
        positions the caller just read with the same ``evaluated``)."""
        if now is None:
            since_events = params.since.events if params.since is not None else 0
            now = await self.current_token(
                evaluated_after=since_events if evaluated else None, user_id=params.user_id
            )
        since = None if params.since is None else self._clamp(params.since, now)
        full = since is None or params.full_state
        memberships, now = await load_memberships(
            self.hs, params.user_id, params.filter, since, now, full
        )
        return SyncRequest(
            params.user_id,
            params.device_id,
            params.filter,
            since,
            now,
            params.full_state,
            memberships,
        )

    def snapshot_request(self, user_id: str, device_id: str | None, now: SyncToken) -> SyncRequest:
        """Everything up to ``now``, for a front end that lists the rooms itself
        (/initialSync): the non-room providers need no memberships then."""
        return SyncRequest(user_id, device_id, DEFAULT_FILTER, None, now, False, RoomMemberships())

    async def _sync_once(
        self, params: SyncParams, *, evaluated: bool = False, now: SyncToken | None = None
    ) -> tuple[dict[str, Any], bool]:
        request = await self.request_for(params, evaluated=evaluated, now=now)
        response = _empty_response(request.now)
        # Filled in place by the providers before the rooms provider (none of
        # them reads it).
        extras = request.room_extras
        has_updates = False
        for provider in self.providers:
            section = await provider.changes(request)
            response.update(section.fields)
            extras.add(section)
            has_updates = has_updates or section.has_updates
        # The rooms provider places the others' per-room parts.
        rooms = await self.rooms.changes(request)
        response.update(rooms.fields)
        return response, has_updates or rooms.has_updates
