"""/sync composed of one provider per stream (DESIGN.md, "Streams";
ranvier/services/sync_providers/): a provider registered with the sync service
adds its top-level fields and per-room parts, over the real HTTP stack, and the
response keeps every section the spec requires when providers add nothing."""

from __future__ import annotations

import time

import pytest

from ranvier.services.sync_providers.base import Section, SyncRequest
from tests.api.rooms_support import create_room, hs_of, make_user
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    make_sync_client_fixture,
    sync,
)

pytestmark = pytest.mark.port_server_name


class _Recorder:
    """A test stream: one top-level field, one ephemeral event in one room, and
    the ranges it was asked about."""

    def __init__(self, room_id: str | None = None, *, news: bool = False) -> None:
        self.room_id = room_id
        #: Say there is something new (in its own field only) in incremental syncs.
        self.news = news
        self.ranges: list[tuple[int | None, int]] = []

    async def changes(self, request: SyncRequest) -> Section:
        since = None if request.since is None else request.since.events
        self.ranges.append((since, request.now.events))
        ephemeral = {}
        if self.room_id is not None and request.since is not None:
            ephemeral = {self.room_id: [{"type": "org.example.ping", "content": {"n": 1}}]}
        return Section(
            fields={"org.example.stream": {"joined": request.memberships.joined_room_ids}},
            ephemeral=ephemeral,
            has_updates=bool(ephemeral) or (self.news and request.since is not None),
        )


async def test_registered_provider_adds_its_field_with_the_joined_rooms(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    recorder = _Recorder()
    hs_of(client).sync.register_provider(recorder)
    body = await sync(client, alice)
    assert body["org.example.stream"] == {"joined": [room_id]}
    # Asked once, for an initial sync ending at the response's events position.
    [(since, now)] = recorder.ranges
    assert since is None
    assert body["next_batch"].startswith(f"s{now}_")


async def test_provider_room_parts_make_a_quiet_room_appear(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    quiet = await create_room(client, alice)
    other = await create_room(client, alice)
    first = await sync(client, alice)
    # Nothing happened: an incremental sync shows no room.
    empty = await sync(client, alice, since=first["next_batch"])
    assert empty["rooms"]["join"] == {}
    hs_of(client).sync.register_provider(_Recorder(quiet))
    body = await sync(client, alice, since=first["next_batch"])
    assert list(body["rooms"]["join"]) == [quiet]
    entry = body["rooms"]["join"][quiet]
    assert entry["ephemeral"]["events"] == [{"type": "org.example.ping", "content": {"n": 1}}]
    assert entry["timeline"]["events"] == []
    assert entry["state"]["events"] == []
    assert other not in body["rooms"]["join"]


async def test_provider_updates_end_a_long_poll_at_once(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    first = await sync(client, alice)
    # The streams move (the poll is not idle) with nothing for alice in them.
    bob = await make_user(client, "bob")
    await create_room(client, bob)
    without = await sync(client, alice, since=first["next_batch"], timeout=300)
    assert without["rooms"]["join"] == {}
    hs_of(client).sync.register_provider(_Recorder(room_id))
    started = time.monotonic()
    body = await sync(client, alice, since=first["next_batch"], timeout=30_000)
    assert time.monotonic() - started < 10
    assert list(body["rooms"]["join"]) == [room_id]
    assert body["rooms"]["join"][room_id]["ephemeral"]["events"][0]["type"] == "org.example.ping"


async def test_provider_with_news_of_its_own_ends_a_long_poll(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    first = await sync(client, alice)
    bob = await make_user(client, "bob")
    await create_room(client, bob)  # not idle, nothing for alice
    hs_of(client).sync.register_provider(_Recorder(news=True))
    started = time.monotonic()
    body = await sync(client, alice, since=first["next_batch"], timeout=30_000)
    assert time.monotonic() - started < 10
    assert body["org.example.stream"] == {"joined": []}
    assert body["rooms"]["join"] == {}
