"""Test-only stand-ins for ``hs.accounts`` and ``hs.rooms`` (the interfaces in the
team brief), so the per-user data endpoints can be tested before and apart from
the real account and room services.

``install_fakes(hs)`` replaces ``hs.accounts`` / ``hs.rooms``: the access token
``tok-<localpart>`` is ``@<localpart>:localhost``; ``rooms.join(room, user)``
sets memberships.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ranvier.core.ids import server_name_of
from ranvier.errors import MatrixError
from ranvier.services.requester import Requester

SERVER = "localhost"


def user(localpart: str) -> str:
    return f"@{localpart}:{SERVER}"


def auth(localpart: str) -> dict[str, str]:
    return {"Authorization": f"Bearer tok-{localpart}"}


class FakeAccounts:
    def __init__(self, guests: set[str] | None = None) -> None:
        self.guests = guests or set()

    async def requester_for_access_token(self, token: str) -> Requester:
        if not token.startswith("tok-"):
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token")
        localpart = token[4:]
        return Requester(user(localpart), "DEVICE", is_guest=localpart in self.guests)

    async def user_exists(self, user_id: str) -> bool:
        return True


@dataclass(frozen=True)
class FakeStoredEvent:
    event_id: str
    room_id: str
    stream_ordering: int


class FakeEvents:
    """``hs.rooms.events``: only ``get_events`` (event ID → room and stream ordering)."""

    def __init__(self) -> None:
        self.events: dict[str, FakeStoredEvent] = {}

    def add(self, room_id: str, *event_ids: str) -> None:
        for event_id in event_ids:
            self.events[event_id] = FakeStoredEvent(event_id, room_id, len(self.events) + 1)

    async def get_events(self, event_ids: Any) -> dict[str, FakeStoredEvent]:
        return {e: self.events[e] for e in event_ids if e in self.events}


class FakeRooms:
    def __init__(self) -> None:
        self.memberships: dict[str, dict[str, str]] = {}
        self.events = FakeEvents()

    def join(self, room_id: str, *user_ids: str) -> None:
        for user_id in user_ids:
            self.memberships.setdefault(room_id, {})[user_id] = "join"

    def leave(self, room_id: str, user_id: str) -> None:
        self.memberships.setdefault(room_id, {})[user_id] = "leave"

    async def get_membership(self, room_id: str, user_id: str) -> str | None:
        return self.memberships.get(room_id, {}).get(user_id)

    async def joined_user_ids(self, room_id: str) -> set[str]:
        members = self.memberships.get(room_id, {})
        return {u for u, m in members.items() if m == "join"}

    async def joined_servers(self, room_id: str) -> Counter[str]:
        return Counter(server_name_of(u) or "" for u in await self.joined_user_ids(room_id))

    async def joined_room_ids(self, user_id: str) -> list[str]:
        return sorted(
            r for r, members in self.memberships.items() if members.get(user_id) == "join"
        )

    async def users_sharing_rooms_with(self, user_id: str) -> set[str]:
        result = {user_id}
        for room_id in await self.joined_room_ids(user_id):
            result |= await self.joined_user_ids(room_id)
        return result

    async def room_exists(self, room_id: str) -> bool:
        return room_id in self.memberships


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def install_fakes(hs: Any, *, guests: set[str] | None = None) -> FakeRooms:
    hs.accounts = FakeAccounts(guests)
    rooms = FakeRooms()
    hs.rooms = rooms
    return rooms


async def fake_client(
    make_client: Any, *, guests: set[str] | None = None
) -> tuple[Any, FakeRooms, Any]:
    """(test client, fake rooms, hs) over the real app with fake accounts and rooms."""
    from ranvier.api.http import HOMESERVER

    client = await make_client()
    hs = client.app[HOMESERVER]
    rooms = install_fakes(hs, guests=guests)
    return client, rooms, hs
