"""Reporting content (report_content.yaml; Client-Server API, "Reporting
Content"): event, room and user reports are stored for administrators; the
spec's 404s without telling apart why; bad bodies 400 and store nothing.
Both engines."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.storage.reports import ReportRow
from tests.api.conftest import NOW_MS, MakeClient
from tests.api.rooms_support import (
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    q,
    send,
)
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    make_sync_client_fixture,
)


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


async def reports(client: Client) -> list[ReportRow]:
    return await hs_of(client).reports.list_reports(100)


async def room_with_message(client: Client) -> tuple[User, User, str, str]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    status, body = await send(client, bob, room_id, {"msgtype": "m.text", "body": "spam"}, "t1")
    assert status == 200
    return alice, bob, room_id, body["event_id"]


def event_report(room_id: str, event_id: str) -> str:
    return f"/rooms/{q(room_id)}/report/{q(event_id)}"


async def test_event_report_is_stored(client: Client) -> None:
    alice, bob, room_id, event_id = await room_with_message(client)
    body = {"reason": "this makes me sad", "score": -100}
    assert await call(client, "POST", event_report(room_id, event_id), alice, body) == (200, {})
    assert await call(client, "POST", event_report(room_id, event_id), alice, {}) == (200, {})
    newest, oldest = await reports(client)
    assert oldest == ReportRow(
        oldest.id, NOW_MS, alice.user_id, "event", room_id, event_id, bob.user_id,
        "this makes me sad", -100,
    )  # fmt: skip
    assert (newest.kind, newest.reason, newest.score) == ("event", None, None)
    assert newest.id > oldest.id


async def test_event_report_404s_do_not_tell_why(client: Client) -> None:
    alice, bob, room_id, event_id = await room_with_message(client)
    carol = await make_user(client, "carol")  # not in the room
    other_room = await create_room(client, alice)
    status, body = await send(client, alice, other_room, {"msgtype": "m.text", "body": "x"}, "t2")
    other_event = body["event_id"]
    cases = [
        (carol, event_report(room_id, event_id)),  # not joined
        (alice, event_report(room_id, "$" + "A" * 43)),  # unknown event
        (alice, event_report(room_id, other_event)),  # event of another room
        (alice, event_report("!nope:localhost", event_id)),  # unknown room
        (alice, event_report("not-a-room", event_id)),
        (alice, event_report(room_id, "not-an-event")),
    ]
    expected = (
        404,
        {
            "errcode": "M_NOT_FOUND",
            "error": "The event was not found or you are not joined to the room where it is.",
        },
    )
    for user, path in cases:
        assert await call(client, "POST", path, user, {"reason": "r"}) == expected, path
    # Left the room: no longer allowed to report in it.
    assert (await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {}))[0] == 200
    status, body = await call(client, "POST", event_report(room_id, event_id), bob, {})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert await reports(client) == []


async def test_event_hidden_by_history_visibility_is_404(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    status, body = await send(client, alice, room_id, {"msgtype": "m.text", "body": "x"}, "t3")
    before_bob = body["event_id"]
    assert (await join(client, bob, room_id))[0] == 200
    status, body = await call(client, "POST", event_report(room_id, before_bob), bob, {})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_an_ignored_senders_event_can_be_reported(client: Client) -> None:
    alice, bob, room_id, event_id = await room_with_message(client)
    path = f"/user/{q(alice.user_id)}/account_data/m.ignored_user_list"
    assert (await call(client, "PUT", path, alice, {"ignored_users": {bob.user_id: {}}}))[0] == 200
    assert await call(client, "POST", event_report(room_id, event_id), alice, {}) == (200, {})


async def test_room_report_needs_no_membership(client: Client) -> None:
    _, _, room_id, _ = await room_with_message(client)
    carol = await make_user(client, "carol")
    path = f"/rooms/{q(room_id)}/report"
    assert await call(client, "POST", path, carol, {"reason": ""}) == (200, {})
    [row] = await reports(client)
    assert (row.kind, row.reporter, row.room_id, row.reason) == ("room", carol.user_id, room_id, "")
    status, body = await call(
        client, "POST", "/rooms/!unknown:localhost/report", carol, {"reason": "r"}
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await call(client, "POST", "/rooms/bad/report", carol, {"reason": "r"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_user_report(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    path = f"/users/{q(bob.user_id)}/report"
    assert await call(client, "POST", path, alice, {"reason": "rude"}) == (200, {})
    remote = f"/users/{q('@eve:elsewhere.example')}/report"
    assert await call(client, "POST", remote, alice, {"reason": "spam"}) == (200, {})
    newest, oldest = await reports(client)
    assert (oldest.kind, oldest.target_user_id, oldest.reason) == ("user", bob.user_id, "rude")
    assert newest.target_user_id == "@eve:elsewhere.example"
    status, body = await call(
        client, "POST", "/users/%40nobody%3Alocalhost/report", alice, {"reason": "r"}
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await call(client, "POST", "/users/nobody/report", alice, {"reason": "r"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


BAD_BODIES: list[tuple[str, Any]] = [
    ("event", {"reason": 5}),
    ("event", [1]),
    ("room", {}),  # reason is required for room and user reports
    ("room", {"reason": None}),
    ("room", {"reason": ["x"]}),
    ("user", {}),
    ("user", {"reason": {"a": 1}}),
]


@pytest.mark.parametrize(("kind", "body"), BAD_BODIES)
async def test_bad_bodies_are_400_and_store_nothing(client: Client, kind: str, body: Any) -> None:
    alice, bob, room_id, event_id = await room_with_message(client)
    path = {
        "event": event_report(room_id, event_id),
        "room": f"/rooms/{q(room_id)}/report",
        "user": f"/users/{q(bob.user_id)}/report",
    }[kind]
    status, answer = await call(client, "POST", path, alice, body)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    response = await client.post("/_matrix/client/v3" + path, data=b"{", headers=alice.headers)
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")
    assert await reports(client) == []


@pytest.mark.parametrize("kind", ["event", "room", "user"])
async def test_nul_in_reason_is_400_and_stores_nothing(client: Client, kind: str) -> None:
    alice, bob, room_id, event_id = await room_with_message(client)
    path = {
        "event": event_report(room_id, event_id),
        "room": f"/rooms/{q(room_id)}/report",
        "user": f"/users/{q(bob.user_id)}/report",
    }[kind]
    status, answer = await call(client, "POST", path, alice, {"reason": "a\u0000b"})
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    assert await reports(client) == []


async def test_reports_need_a_token(client: Client) -> None:
    _, bob, room_id, event_id = await room_with_message(client)
    for path in (
        event_report(room_id, event_id),
        f"/rooms/{q(room_id)}/report",
        f"/users/{q(bob.user_id)}/report",
    ):
        status, body = await call(client, "POST", path, None, {"reason": "r"})
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_listing_pages_newest_first(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    for n in range(5):
        await call(client, "POST", f"/users/{q(bob.user_id)}/report", alice, {"reason": str(n)})
    service = hs_of(client).reports
    first = await service.list_reports(2)
    assert [r.reason for r in first] == ["4", "3"]
    second = await service.list_reports(2, before_id=first[-1].id)
    assert [r.reason for r in second] == ["2", "1"]


async def test_reports_are_rate_limited_per_reporter(
    make_client: MakeClient, migrated_dsn: str
) -> None:
    # The default limits (ratelimit.message: burst 10), on the fixed clock.
    client = await make_client({"database": migrated_dsn})
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    path = f"/users/{q(bob.user_id)}/report"
    for n in range(10):
        assert await call(client, "POST", path, alice, {"reason": str(n)}) == (200, {}), n
    status, body = await call(client, "POST", path, alice, {"reason": "one too many"})
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert body["retry_after_ms"] > 0
    assert len(await reports(client)) == 10
    # Bob's own bucket, and Alice can still send messages.
    assert await call(
        client, "POST", f"/users/{q(alice.user_id)}/report", bob, {"reason": "x"}
    ) == (
        200,
        {},
    )
    room_id = await create_room(client, alice)
    status, _ = await send(client, alice, room_id, {"msgtype": "m.text", "body": "hi"}, "t9")
    assert status == 200
