"""A /sync's view of the user's rooms (services/sync_providers/memberships.py):
without a room filter the joined rooms come from the store's split as they
are, with one they are filtered, and ``joined_among`` finds a few rooms by
lookup or by scan with the same answer, in the joined order."""

from __future__ import annotations

from ranvier.core.filters import DEFAULT_FILTER, parse_filter
from ranvier.services.sync_providers.memberships import RoomMemberships
from ranvier.storage.rooms import Membership, UserMemberships

USER = "@u:localhost"


def _membership(room: int, kind: str, position: int) -> Membership:
    return Membership(f"!r{room}:localhost", USER, kind, f"$e{position}", position, False)


def _memberships() -> UserMemberships:
    kinds = ["join", "leave", "join", "invite", "join", "ban", "join", "knock"]
    kinds += ["join"] * 32
    return UserMemberships.of([_membership(i, kind, 10 + i) for i, kind in enumerate(kinds)])


def _ids(memberships: list[Membership]) -> list[str]:
    return [m.room_id for m in memberships]


def test_without_a_room_filter_the_joined_rooms_are_the_stores() -> None:
    cached = _memberships()
    result = RoomMemberships()
    result.changes = {"!r3:localhost": [], "!r1:localhost": []}
    result.classify(cached, DEFAULT_FILTER, full=False)
    assert result.joined == list(cached.joined)
    assert list(result.joined_room_ids) == [m.room_id for m in cached.joined]
    assert _ids(result.joined) == [m.room_id for m in cached.all if m.membership == "join"]
    # Others only with a change in the range (not full): the invite and the leave.
    assert _ids(result.invited) == ["!r3:localhost"]
    assert _ids(result.left) == ["!r1:localhost"]
    assert result.knocked == []
    full = RoomMemberships()
    full.classify(cached, DEFAULT_FILTER, full=True)
    assert _ids(full.invited) == ["!r3:localhost"] and _ids(full.knocked) == ["!r7:localhost"]


def test_a_room_filter_keeps_only_its_rooms() -> None:
    cached = _memberships()
    wanted = ["!r0:localhost", "!r2:localhost", "!r3:localhost", "!r39:localhost"]
    room_filter = parse_filter({"room": {"rooms": wanted, "not_rooms": ["!r2:localhost"]}})
    result = RoomMemberships()
    result.classify(cached, room_filter, full=True)
    assert _ids(result.joined) == ["!r0:localhost", "!r39:localhost"]
    assert list(result.joined_room_ids) == ["!r0:localhost", "!r39:localhost"]
    assert _ids(result.invited) == ["!r3:localhost"]
    # No lookup table with a filter: joined_among scans what the filter kept.
    assert _ids(result.joined_among({"!r4:localhost", "!r39:localhost"})) == ["!r39:localhost"]


def test_joined_among_answers_the_same_by_lookup_and_by_scan() -> None:
    cached = _memberships()
    result = RoomMemberships()
    result.classify(cached, DEFAULT_FILTER, full=False)
    # A few rooms: looked up. Rooms not joined (left, invited) or unknown are not
    # answered; the answer is in the joined order, whatever the set's.
    few = {"!r30:localhost", "!r2:localhost", "!r1:localhost", "!r3:localhost", "!nope:x"}
    expected = ["!r2:localhost", "!r30:localhost"]
    assert _ids(result.joined_among(few)) == expected
    scanned = RoomMemberships(joined=list(cached.joined))  # no lookup table: a scan
    assert _ids(scanned.joined_among(few)) == expected
    # Many rooms: scanned, same answer.
    many = {m.room_id for m in cached.all[::2]}
    assert _ids(result.joined_among(many)) == [
        m.room_id for m in cached.joined if m.room_id in many
    ]
    assert result.joined_among(set()) == []


def test_a_since_token_from_the_future_is_clamped_to_now_and_one_in_range_kept() -> None:
    from ranvier.services.sync import SyncService, SyncToken

    now = SyncToken(10, 20, 30, 40, 5, 60, 70)
    within = SyncToken(9, 20, 1, 40, 9, 0, 70)
    assert SyncService._clamp(within, now) is within
    ahead = SyncToken(11, 2, 31, 40, 9, 61, 71)
    # Each stream to the smaller of the two; typing (a slot, not a position) kept.
    assert SyncService._clamp(ahead, now) == SyncToken(10, 2, 30, 40, 9, 60, 70)
    assert SyncService._clamp(SyncToken(1, 1, 1, 1, 1, 1, 71), now).device_lists == 70
    assert SyncToken.parse(now.encode()) == now
