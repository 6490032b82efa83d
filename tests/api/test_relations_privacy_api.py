"""What relations show a user who left the room or ignores someone, through
the HTTP stack on both engines.

Client-Server API: "Room History Visibility" (nothing sent after a user left
is theirs to see, bundled aggregations included: "Aggregations of child
events"), "Ignoring Users" (the ignored user's events are left out wherever
events are served: /relations, /threads and the thread summary's
``latest_event``; the count leaves their replies out too, as Synapse's).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.rooms_support import Client, User, call, create_room, join, make_user, q
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    get,
    make_sync_client_fixture,
    messages,
    sync,
)
from tests.api.test_relations_api import (
    edit_of,
    get_event,
    ids,
    in_thread,
    m_relations,
    post,
    reference,
    relations,
    text,
    threads,
)

V3 = "/_matrix/client/v3"


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


async def context(client: Client, user: User, room_id: str, event_id: str) -> dict[str, Any]:
    status, body = await get(
        client, f"{V3}/rooms/{q(room_id)}/context/{q(event_id)}", user, limit=10
    )
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def from_messages(client: Client, user: User, room_id: str, event_id: str) -> Any:
    status, body = await messages(client, user, room_id, dir="b", limit=50)
    assert status == 200, body
    [event] = [e for e in body["chunk"] if e["event_id"] == event_id]
    return event, ids(body["chunk"])


async def set_ignored(client: Client, user: User, *others: User) -> None:
    path = f"/user/{q(user.user_id)}/account_data/m.ignored_user_list"
    body = {"ignored_users": {other.user_id: {} for other in others}}
    assert await call(client, "PUT", path, user, body) == (200, {})


def summary(event: dict[str, Any]) -> tuple[str, int] | None:
    thread = m_relations(event).get("m.thread")
    return None if thread is None else (thread["latest_event"]["event_id"], thread["count"])


def edit_id(event: dict[str, Any]) -> str | None:
    edit = m_relations(event).get("m.replace")
    return None if edit is None else str(edit["event_id"])


def reference_ids(event: dict[str, Any]) -> list[str]:
    chunk = m_relations(event).get("m.reference", {}).get("chunk", [])
    return [item["event_id"] for item in chunk]


async def test_nothing_sent_after_leaving_shows_in_bundles(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    root = await post(client, alice, room_id, text("root"))
    reply = await post(client, alice, room_id, in_thread(root, "reply before"))
    edit = await post(client, alice, room_id, edit_of(root, "edit before"))
    ref = await post(client, alice, room_id, reference(root))
    status, _ = await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {})
    assert status == 200
    late_reply = await post(client, alice, room_id, in_thread(root, "reply after"))
    late_edit = await post(client, alice, room_id, edit_of(root, "edit after"))
    late_ref = await post(client, alice, room_id, reference(root))
    late_root = await post(client, alice, room_id, text("root after"))
    await post(client, alice, room_id, in_thread(late_root, "in a later thread"))

    # The joined sender sees everything (the uncapped path).
    seen = await get_event(client, alice, room_id, root)
    assert summary(seen) == (late_reply, 2)
    assert edit_id(seen) == late_edit
    assert reference_ids(seen) == [ref, late_ref]

    # Bob sees the room as it was when he left, wherever the root is served.
    by_event = await get_event(client, bob, room_id, root)
    by_messages, listed = await from_messages(client, bob, room_id, root)
    by_context = (await context(client, bob, room_id, root))["event"]
    for served in (by_event, by_messages, by_context):
        assert summary(served) == (reply, 1)
        assert served["unsigned"]["m.relations"]["m.thread"]["latest_event"]["content"] == {
            "msgtype": "m.text",
            "body": "reply before",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        }
        assert edit_id(served) == edit
        assert reference_ids(served) == [ref]
    assert not {late_reply, late_edit, late_ref, late_root} & set(listed)

    # An initial /sync with the room among those left (its timeline ends at the leave).
    left = await sync(
        client, bob, filter={"room": {"include_leave": True, "timeline": {"limit": 50}}}
    )
    timeline = left["rooms"]["leave"][room_id]["timeline"]["events"]
    [synced] = [event for event in timeline if event["event_id"] == root]
    assert summary(synced) == (reply, 1)
    assert edit_id(synced) == edit
    assert reference_ids(synced) == [ref]

    status, body = await relations(client, bob, room_id, root)
    assert status == 200, body
    assert ids(body["chunk"]) == [ref, edit, reply]
    status, body = await relations(client, bob, room_id, root, "m.thread")
    assert status == 200 and ids(body["chunk"]) == [reply]

    status, body = await threads(client, bob, room_id)
    assert status == 200, body
    assert ids(body["chunk"]) == [root]
    assert summary(body["chunk"][0]) == (reply, 1)
    status, body = await threads(client, alice, room_id)
    assert ids(body["chunk"]) == [late_root, root]
    assert summary(body["chunk"][1]) == (late_reply, 2)


async def test_a_thread_wholly_after_the_leave_has_no_summary(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    root = await post(client, alice, room_id, text("root"))
    assert (await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {}))[0] == 200
    await post(client, alice, room_id, in_thread(root, "after"))
    await post(client, alice, room_id, edit_of(root, "after"))
    assert m_relations(await get_event(client, bob, room_id, root)) == {}
    status, body = await relations(client, bob, room_id, root)
    assert status == 200 and body["chunk"] == []
    status, body = await threads(client, bob, room_id)
    assert status == 200 and body["chunk"] == []


async def ignoring_room(client: Client) -> tuple[User, User, User, str]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, alice, preset="public_chat")
    for user in (bob, carol):
        assert (await join(client, user, room_id))[0] == 200
    await set_ignored(client, bob, carol)
    return alice, bob, carol, room_id


async def test_ignored_users_left_out_of_relations_and_threads(client: Client) -> None:
    alice, bob, carol, room_id = await ignoring_room(client)
    root = await post(client, alice, room_id, text("root"))
    reply = await post(client, alice, room_id, in_thread(root, "alice replies"))
    carols_reply = await post(client, carol, room_id, in_thread(root, "carol replies"))
    carols_ref = await post(client, carol, room_id, reference(root))
    carols_root = await post(client, carol, room_id, text("carol's root"))
    await post(client, alice, room_id, in_thread(carols_root, "alice in carol's thread"))
    only_carol = await post(client, alice, room_id, text("only carol replies"))
    await post(client, carol, room_id, in_thread(only_carol, "carol alone"))

    status, body = await relations(client, bob, room_id, root)
    assert status == 200 and ids(body["chunk"]) == [reply]
    status, body = await relations(client, alice, room_id, root)
    assert ids(body["chunk"]) == [carols_ref, carols_reply, reply]

    status, body = await threads(client, bob, room_id)
    assert status == 200, body
    assert ids(body["chunk"]) == [only_carol, root]
    assert summary(body["chunk"][0]) is None  # every reply is an ignored user's
    assert summary(body["chunk"][1]) == (reply, 1)
    status, body = await threads(client, alice, room_id)
    assert ids(body["chunk"]) == [only_carol, carols_root, root]

    for served in (
        await get_event(client, bob, room_id, root),
        (await from_messages(client, bob, room_id, root))[0],
        (await context(client, bob, room_id, root))["event"],
    ):
        assert summary(served) == (reply, 1)
        assert reference_ids(served) == []
    seen = await get_event(client, alice, room_id, root)
    assert summary(seen) == (carols_reply, 2)
    assert reference_ids(seen) == [carols_ref]

    # Un-ignoring shows them again.
    await set_ignored(client, bob)
    assert summary(await get_event(client, bob, room_id, root)) == (carols_reply, 2)
    status, body = await relations(client, bob, room_id, root)
    assert ids(body["chunk"]) == [carols_ref, carols_reply, reply]
