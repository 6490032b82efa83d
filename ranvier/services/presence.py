"""Presence (Client-Server API, "Presence").

The state each local user set (``online`` / ``unavailable`` / ``offline``),
their status message and the time of their last pro-active action. Changes
take a position of the ``presence`` stream and wake every user sharing a room
with the user. For /sync this service is the ``presence`` stream provider:
:meth:`current_position` and :meth:`changes_for_user`, plus
:meth:`set_presence_from_sync` for ``/sync``'s ``set_presence``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from ranvier.core.ids import is_my_user_id
from ranvier.errors import MatrixError
from ranvier.storage.engine import current_stream_position
from ranvier.storage.presence import STREAM, PresenceRow, PresenceStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)

#: "Last active ago": while the last activity is this recent an online user is
#: ``currently_active`` and activity is not re-announced (Synapse's
#: LAST_ACTIVE_GRANULARITY).
CURRENTLY_ACTIVE_MS = 60_000
#: "Idle timeout": an online user inactive this long is shown ``unavailable``
#: (Synapse's IDLE_TIMER, 5 minutes).
IDLE_TIMEOUT_MS = 5 * 60_000
#: An incremental /sync reads everyone's presence changes since its token and
#: keeps those of users sharing a room, when there are at most this many;
#: beyond, it looks up the users sharing a room instead.
RECENT_CHANGES = 200


class PresenceService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = PresenceStore(hs.database)

    # --- writes ------------------------------------------------------------------

    async def set_presence(self, user_id: str, state: str, status_msg: str | None) -> None:
        """PUT /presence/{userId}/status: set the state and status message
        (an absent message clears it, as Synapse). Setting ``online`` counts as
        activity ("Last active ago")."""
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid presence state {state!r}")
        previous = await self.store.get(user_id)
        now = self.hs.clock_ms()
        last_active = now if state == ONLINE or previous is None else previous.last_active_ts
        await self._write(user_id, state, status_msg, last_active)

    async def set_presence_from_sync(self, user_id: str, state: str | None) -> None:
        """``/sync?set_presence=``: absent or ``online`` → the user is online and
        active (written only when that changes what others see: a state change,
        or activity older than :data:`CURRENTLY_ACTIVE_MS`); ``unavailable`` →
        unavailable; ``offline`` → no change (the spec: "the client is not marked
        as being online"). The status message is kept."""
        state = ONLINE if state is None else state
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid set_presence {state!r}")
        if state == OFFLINE:
            return
        previous = await self.store.get(user_id)
        now = self.hs.clock_ms()
        status_msg = None if previous is None else previous.status_msg
        if state == ONLINE:
            if (
                previous is not None
                and previous.state == ONLINE
                and now - previous.last_active_ts < CURRENTLY_ACTIVE_MS
            ):
                return
            # Still online, only more recently active: stored (the next /sync of
            # those sharing a room shows it), but no one's long-poll is woken for
            # it. With hundreds of clients long-polling rooms of a thousand
            # members, waking every member for each client's refresh turned each
            # real message into several /sync answers (bench scenario 14).
            refresh = previous is not None and previous.state == ONLINE
            await self._write(user_id, ONLINE, status_msg, now, wake=not refresh)
        else:
            if previous is not None and previous.state == UNAVAILABLE:
                return
            last_active = now if previous is None else previous.last_active_ts
            await self._write(user_id, UNAVAILABLE, status_msg, last_active)

    async def bump_last_active(self, user_id: str) -> None:
        """A pro-active action (e.g. sending a message): the user is online now."""
        await self.set_presence_from_sync(user_id, ONLINE)

    async def _write(
        self,
        user_id: str,
        state: str,
        status_msg: str | None,
        last_active_ts: int,
        *,
        wake: bool = True,
    ) -> None:
        row = await self.store.put(user_id, state, status_msg, last_active_ts)
        if wake:
            audience = await self.hs.rooms.users_sharing_rooms_with(user_id)
            self.hs.notifier.notify_users({*audience, user_id})
        federation_edus = getattr(self.hs, "federation_edus", None)
        if federation_edus is not None and is_my_user_id(user_id, self.hs.server_name):
            # m.presence to the servers sharing a room with the user.
            content = self.presence_content(
                PresenceRow(user_id, state, status_msg, last_active_ts, row)
            )
            await federation_edus.on_local_presence(user_id, content)

    async def set_remote_presence(
        self, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> None:
        """Presence of another server's user, from an m.presence EDU (checked)."""
        await self._write(user_id, state, status_msg, last_active_ts)

    # --- reads -------------------------------------------------------------------

    async def get_presence(self, observer_id: str, user_id: str) -> dict[str, Any]:
        """GET /presence/{userId}/status: visible to the user and to users sharing
        a room with them, else 403 (as Synapse). A user who never set presence
        is ``offline``."""
        if observer_id != user_id:
            audience = await self.hs.rooms.users_sharing_rooms_with(user_id)
            if observer_id not in audience:
                raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to see their presence.")
        row = await self.store.get(user_id)
        if row is None:
            return {"presence": OFFLINE}
        return self.presence_content(row)

    def presence_content(self, row: PresenceRow) -> dict[str, Any]:
        """The ``m.presence`` content (and GET's body), with times from the clock now."""
        now = self.hs.clock_ms()
        ago = max(now - row.last_active_ts, 0)
        state = row.state
        if state == ONLINE and ago >= IDLE_TIMEOUT_MS:
            state = UNAVAILABLE
        content: dict[str, Any] = {"presence": state, "last_active_ago": ago}
        if state == ONLINE:
            content["currently_active"] = ago < CURRENTLY_ACTIVE_MS
        if row.status_msg is not None:
            content["status_msg"] = row.status_msg
        return content

    def _event(self, row: PresenceRow) -> dict[str, Any]:
        return {"type": "m.presence", "sender": row.user_id, "content": self.presence_content(row)}

    async def presence_events_for_users(self, user_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Current ``m.presence`` events of ``user_ids`` that have any (e.g. for
        users who newly share a room with the syncing user)."""
        rows = await self.store.get_many(sorted(set(user_ids)))
        return [self._event(row) for row in rows]

    # --- /sync provider ------------------------------------------------------------

    async def current_position(self) -> int:
        """The ``presence`` stream's current position."""
        return await current_stream_position(self.hs.database, STREAM)

    async def changes_for_user(
        self,
        user_id: str,
        from_pos: int,
        to_pos: int,
        room_ids: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """``m.presence`` events (``{"type", "sender", "content"}``) for users sharing
        a room with ``user_id`` (the user included) whose presence changed in
        (from_pos, to_pos]; ``from_pos`` 0 gives every such user's current
        presence. ``room_ids`` is accepted for a uniform signature and unused:
        presence is per user, not per room."""
        if from_pos >= to_pos:
            return []  # no presence changed (most syncs)
        audience = await self.hs.rooms.users_sharing_rooms_with(user_id)  # the user included
        if from_pos > 0:
            # An incremental sync: the few users whose presence changed since,
            # kept if they share a room, rather than the presence of everyone
            # sharing one (a thousand per large room) looked up on every /sync.
            changed = await self.store.changed_in(from_pos, to_pos, RECENT_CHANGES + 1)
            if len(changed) <= RECENT_CHANGES:
                return [self._event(row) for row in changed if row.user_id in audience]
        rows = await self.store.changed_between(sorted(audience), from_pos, to_pos)
        return [self._event(row) for row in rows]
