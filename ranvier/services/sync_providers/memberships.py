"""The user's rooms for one /sync: the per-request context every provider
shares (which rooms are joined, which changed membership in the range)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ranvier.core.filters import Filter
from ranvier.services.ignored_users import drop_ignored_invites
from ranvier.services.sync_tokens import SyncToken
from ranvier.storage.events import MembershipChange
from ranvier.storage.rooms import Membership, UserMemberships

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

ALL_MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


@dataclass(slots=True)
class RoomMemberships:
    joined: list[Membership] = field(default_factory=list)
    invited: list[Membership] = field(default_factory=list)
    knocked: list[Membership] = field(default_factory=list)
    left: list[Membership] = field(default_factory=list)
    #: room ID → the user's membership changes in (since, now], oldest first.
    changes: dict[str, list[MembershipChange]] = field(default_factory=dict)
    #: room ID (rooms in ``changes``) → the membership before the first change.
    at_since: dict[str, str | None] = field(default_factory=dict)
    _joined_ids: Sequence[str] | None = None
    #: Every membership of the user by room, when ``joined`` holds every
    #: joined room of it (no room filter): :meth:`joined_among` looks up.
    _by_room: dict[str, Membership] | None = None

    @property
    def joined_room_ids(self) -> Sequence[str]:
        """The IDs of ``joined`` (computed once: several providers ask; do not
        change ``joined`` after asking)."""
        if self._joined_ids is None:
            self._joined_ids = [m.room_id for m in self.joined]
        return self._joined_ids

    def joined_among(self, room_ids: set[str]) -> list[Membership]:
        """The memberships of ``joined`` whose room is in ``room_ids``, in
        ``joined``'s order; a lookup per room ID when it can, so that an
        incremental /sync of a user in many rooms costs what its active rooms do."""
        by_room = self._by_room
        if by_room is None or len(room_ids) * 4 > len(self.joined):
            return [m for m in self.joined if m.room_id in room_ids]
        found = [
            m
            for m in (by_room.get(room_id) for room_id in room_ids)
            if m is not None and m.membership == "join"
        ]
        found.sort(key=lambda m: m.stream_ordering)
        return found

    def newly_joined(self, room_id: str) -> bool:
        """Joined since the token (or left and re-joined in the range): synced
        as in an initial sync (sync.yaml, ``rooms.join``)."""
        room_changes = self.changes.get(room_id, [])
        return bool(room_changes) and (
            self.at_since.get(room_id) != "join"
            or any(c.membership != "join" for c in room_changes)
        )

    def rooms_joined_since(self) -> list[str]:
        """The joined rooms :meth:`newly_joined` (only those with changes are looked at)."""
        if not self.changes:
            return []
        return [
            room_id
            for room_id in self.joined_room_ids
            if room_id in self.changes and self.newly_joined(room_id)
        ]

    def was_joined_at_since(self, room_id: str) -> bool:
        return room_id in self.changes and self.at_since.get(room_id) == "join"

    def classify(self, current: UserMemberships, sync_filter: Filter, full: bool) -> None:
        """Place the user's memberships (``current``, from the store) in
        ``joined``, ``invited``, ``knocked`` and ``left`` for this /sync, once
        ``changes`` is filled: an invite, a knock or a leave is shown in an
        incremental /sync only when it changed in the range."""
        room_filter = sync_filter.room
        every_room = room_filter.rooms is None and not room_filter.not_rooms
        others: Sequence[Membership]
        if every_room:
            # Every joined room, as the store keeps them: no loop over them.
            self.joined = list(current.joined)
            self._by_room = current.by_room
            self._joined_ids = current.joined_ids
            others = current.others
        else:
            others = [m for m in current.all if room_filter.allows_room(m.room_id)]
        for membership in others:
            kind = membership.membership
            if kind == "join":
                self.joined.append(membership)
                continue
            changed = membership.room_id in self.changes
            if kind == "invite" and (full or changed):
                self.invited.append(membership)
            elif kind == "knock" and (full or changed):
                self.knocked.append(membership)
            elif (
                kind in ("leave", "ban")
                and not membership.forgotten
                and (changed or (full and room_filter.include_leave))
            ):
                self.left.append(membership)


async def load_memberships(
    hs: Homeserver,
    user_id: str,
    sync_filter: Filter,
    since: SyncToken | None,
    now: SyncToken,
    full: bool,
) -> tuple[RoomMemberships, SyncToken]:
    """The user's rooms, sorted by what /sync shows of them, and ``now`` with
    its events slot moved up to the newest membership if one committed after
    the positions were read."""
    current = await hs.rooms.store.user_memberships(user_id)
    # Oldest first: the last is the newest.
    newest_membership = current.all[-1].stream_ordering if current.all else 0
    if newest_membership > now.events:
        # Committed after we read the positions; every position below it is
        # committed too, so the events slot can move up to it.
        now = replace(now, events=newest_membership)
    result = RoomMemberships()
    if since is not None:
        for change in await hs.rooms.events.membership_changes_for_user(
            user_id, since.events, now.events
        ):
            result.changes.setdefault(change.room_id, []).append(change)
    result.at_since = await _memberships_at_since(hs, result.changes)
    result.classify(current, sync_filter, full)
    result.invited = await drop_ignored_invites(hs, user_id, result.invited)  # "Ignoring Users"
    return result, now


async def _memberships_at_since(
    hs: Homeserver, changes: dict[str, list[MembershipChange]]
) -> dict[str, str | None]:
    """For each room with membership changes in the range, the user's
    membership before the first of them (from the state it replaced)."""
    store = hs.rooms.events
    firsts = await store.get_events([room_changes[0].event_id for room_changes in changes.values()])
    previous_ids = {
        room_id: firsts[c[0].event_id].replaces_state
        for room_id, c in changes.items()
        if c[0].event_id in firsts
    }
    previous = await store.get_events([eid for eid in previous_ids.values() if eid is not None])
    result: dict[str, str | None] = {}
    for room_id in changes:
        event_id = previous_ids.get(room_id)
        stored = previous.get(event_id) if event_id is not None else None
        result[room_id] = None if stored is None else stored.event.membership
    return result
