"""Relations, threads and bundled aggregations through the HTTP stack, on both
engines (relations.yaml, threads_list.yaml; Client-Server API "Forming
relationships between events", "Threading", "Event replacements",
"Reference relations", "Annotations")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Clock
from tests.api.rooms_support import (
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    put_state,
    q,
    send,
)
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    get,
    make_sync_client_fixture,
    messages,
    sync,
)

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
_txn = iter(range(1_000_000))


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


async def post(
    client: Client,
    user: User,
    room_id: str,
    content: dict[str, Any],
    event_type: str = "m.room.message",
) -> str:
    status, payload = await send(client, user, room_id, content, f"t{next(_txn)}", event_type)
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


def text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


def in_thread(root: str, body: str) -> dict[str, Any]:
    return {**text(body), "m.relates_to": {"rel_type": "m.thread", "event_id": root}}


def edit_of(target: str, body: str) -> dict[str, Any]:
    return {
        **text(f"* {body}"),
        "m.new_content": text(body),
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


def reaction(target: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


def reference(target: str) -> dict[str, Any]:
    return {**text("ref"), "m.relates_to": {"rel_type": "m.reference", "event_id": target}}


async def relations(
    client: Client, user: User, room_id: str, event_id: str, *path: str, **params: Any
) -> tuple[int, Any]:
    suffix = "".join(f"/{q(part)}" for part in path)
    return await get(
        client, f"{V1}/rooms/{q(room_id)}/relations/{q(event_id)}{suffix}", user, **params
    )


async def threads(client: Client, user: User, room_id: str, **params: Any) -> tuple[int, Any]:
    return await get(client, f"{V1}/rooms/{q(room_id)}/threads", user, **params)


async def get_event(client: Client, user: User, room_id: str, event_id: str) -> dict[str, Any]:
    status, body = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(event_id)}", user)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def redact(client: Client, user: User, room_id: str, event_id: str) -> None:
    status, body = await call(
        client, "PUT", f"/rooms/{q(room_id)}/redact/{q(event_id)}/r{next(_txn)}", user, {}
    )
    assert status == 200, body


async def two_in_room(client: Client) -> tuple[User, User, str]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    return alice, bob, room_id


def ids(chunk: list[dict[str, Any]]) -> list[str]:
    return [event["event_id"] for event in chunk]


def m_relations(event: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = event["unsigned"].get("m.relations", {})
    return value


async def test_relation_fields_with_nul_are_stored_but_not_indexed(client: Client) -> None:
    """NUL in m.relates_to (content may hold it; the index's text columns may
    not): the event is accepted, served, and relates to nothing."""
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    odd = {
        "msgtype": "m.text",
        "body": "odd",
        "m.relates_to": {"rel_type": "m.thread\x00", "event_id": root},
    }
    odd_id = await post(client, bob, room_id, odd)
    status, body = await relations(client, bob, room_id, root)
    assert (status, ids(body["chunk"])) == (200, [])
    status, event = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(odd_id)}", bob)
    assert status == 200 and event["content"]["m.relates_to"]["rel_type"] == "m.thread\x00"


# --- /relations -----------------------------------------------------------------------


async def test_relations_newest_first_filtered_and_paged(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    await post(client, alice, room_id, text("unrelated"))
    children = [
        await post(client, bob, room_id, reaction(root, "👍"), "m.reaction"),
        await post(client, bob, room_id, in_thread(root, "t1")),
        await post(client, alice, room_id, reaction(root, "🎉"), "m.reaction"),
        await post(client, alice, room_id, in_thread(root, "t2")),
        await post(client, alice, room_id, edit_of(root, "root v2")),
    ]
    status, body = await relations(client, bob, room_id, root, limit=10)
    assert status == 200, body
    assert ids(body["chunk"]) == children[::-1]
    assert "next_batch" not in body and "prev_batch" not in body
    assert "recursion_depth" not in body
    assert all(event["room_id"] == room_id for event in body["chunk"])

    status, forwards = await relations(client, bob, room_id, root, dir="f", limit=10)
    assert ids(forwards["chunk"]) == children

    seen: list[str] = []
    token = None
    for _ in range(5):
        status, page = await relations(client, bob, room_id, root, limit=2, **{"from": token})
        assert status == 200, page
        assert len(page["chunk"]) <= 2
        seen += ids(page["chunk"])
        if token is not None:
            assert page["prev_batch"] == token
        token = page.get("next_batch")
        if token is None:
            break
    assert seen == children[::-1]

    status, thread = await relations(client, bob, room_id, root, "m.thread", limit=10)
    assert ids(thread["chunk"]) == [children[3], children[1]]
    status, reactions = await relations(
        client, bob, room_id, root, "m.annotation", "m.reaction", limit=10
    )
    assert ids(reactions["chunk"]) == [children[2], children[0]]
    status, none = await relations(
        client, bob, room_id, root, "m.annotation", "m.room.message", limit=10
    )
    assert status == 200 and none["chunk"] == []


async def test_relations_to_bound(client: Client) -> None:
    alice, _, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    first = [await post(client, alice, room_id, in_thread(root, f"a{i}")) for i in range(2)]
    status, page = await relations(client, alice, room_id, root, limit=10)
    top_token = page.get("next_batch")
    assert top_token is None
    later = [await post(client, alice, room_id, in_thread(root, f"b{i}")) for i in range(2)]
    # A page from the newest back to the first page's start: only the later ones
    # are above ``to`` when ``to`` is the position just before them.
    status, newest = await relations(client, alice, room_id, root, limit=2)
    assert ids(newest["chunk"]) == later[::-1]
    status, rest = await relations(
        client, alice, room_id, root, limit=10, **{"from": newest["next_batch"]}
    )
    assert ids(rest["chunk"]) == first[::-1]
    status, bounded = await relations(
        client, alice, room_id, root, limit=10, to=newest["next_batch"]
    )
    assert status == 200 and ids(bounded["chunk"]) == later[::-1]


async def test_relations_recurse(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    reply = await post(client, bob, room_id, in_thread(root, "reply"))
    on_reply = await post(client, alice, room_id, reaction(reply, "👀"), "m.reaction")
    edit = await post(client, bob, room_id, edit_of(reply, "reply v2"))
    on_edit = await post(client, alice, room_id, reference(edit))
    too_deep = await post(client, alice, room_id, reference(on_edit))

    status, direct = await relations(client, bob, room_id, root, limit=10)
    assert ids(direct["chunk"]) == [reply]
    assert "recursion_depth" not in direct
    status, flat = await relations(client, bob, room_id, root, limit=10, recurse=False)
    assert ids(flat["chunk"]) == [reply] and flat["recursion_depth"] == 0
    status, deep = await relations(client, bob, room_id, root, limit=10, recurse=True)
    assert status == 200, deep
    assert ids(deep["chunk"]) == [on_edit, edit, on_reply, reply]
    assert too_deep not in ids(deep["chunk"])
    assert deep["recursion_depth"] == 3
    status, annotations = await relations(
        client, bob, room_id, root, "m.annotation", limit=10, recurse=True
    )
    assert ids(annotations["chunk"]) == [on_reply]


async def test_relations_not_found_without_leaking(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    await post(client, bob, room_id, in_thread(root, "secret"))
    other_room = await create_room(client, alice, preset="private_chat")
    carol = await make_user(client, "carol")
    for event_id, user, where in (
        ("$unknown:example.org", alice, room_id),
        (root, alice, other_room),  # the event is in another room
        (root, carol, room_id),  # not in the room (not world-readable)
    ):
        status, body = await relations(client, user, where, event_id)
        assert status == 404, (event_id, where, body)
        assert body["errcode"] == "M_NOT_FOUND"

    # History before carol joined a "joined"-visibility room: invisible to her.
    hidden = await create_room(client, alice, preset="public_chat")
    status, _ = await put_state(
        client, alice, hidden, "m.room.history_visibility", "", {"history_visibility": "joined"}
    )
    assert status == 200
    old_root = await post(client, alice, hidden, text("before carol"))
    await post(client, alice, hidden, in_thread(old_root, "old reply"))
    assert (await join(client, carol, hidden))[0] == 200
    status, body = await relations(client, carol, hidden, old_root)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await threads(client, carol, hidden)
    assert status == 200 and body["chunk"] == []
    new_root = await post(client, alice, hidden, text("after carol"))
    await post(client, alice, hidden, in_thread(new_root, "new reply"))
    status, body = await threads(client, carol, hidden)
    assert ids(body["chunk"]) == [new_root]


async def test_relations_bad_parameters(client: Client) -> None:
    alice, _, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    for params in (
        {"from": "garbage"},
        {"to": "s1_2"},
        {"limit": "abc"},
        {"limit": 0},
        {"limit": -3},
        {"dir": "x"},
        {"recurse": "maybe"},
    ):
        status, body = await relations(client, alice, room_id, root, **params)
        assert status == 400, (params, body)
        assert body["errcode"] == "M_INVALID_PARAM", params
    status, body = await relations(client, alice, room_id, "not-an-event-id")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await get(client, f"{V1}/rooms/not-a-room/relations/{q(root)}", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


# --- bundled aggregations -----------------------------------------------------------------


async def test_edit_bundle_everywhere_original_content_kept(client: Client, clock: Clock) -> None:
    alice, bob, room_id = await two_in_room(client)
    original = await post(client, alice, room_id, text("hello"))
    clock.advance(1000)
    first_edit = await post(client, alice, room_id, edit_of(original, "hello v1"))
    clock.advance(1000)
    second_edit = await post(client, alice, room_id, edit_of(original, "hello v2"))
    clock.advance(1000)
    # Not valid edits: another sender; another type; an edit of an edit.
    await post(client, bob, room_id, edit_of(original, "bob's"))
    await post(client, alice, room_id, edit_of(original, "sticker"), "m.sticker")
    await post(client, alice, room_id, edit_of(second_edit, "edit of edit"))

    def check(event: dict[str, Any]) -> None:
        assert event["content"] == text("hello")  # v1.7: never replaced
        bundle = m_relations(event)
        assert set(bundle) == {"m.replace"}
        assert bundle["m.replace"]["event_id"] == second_edit
        assert bundle["m.replace"]["content"]["m.new_content"] == text("hello v2")
        assert bundle["m.replace"]["sender"] == alice.user_id

    check(await get_event(client, bob, room_id, original))
    status, page = await messages(client, bob, room_id, dir="b", limit=50)
    [served] = [e for e in page["chunk"] if e["event_id"] == original]
    check(served)
    status, context = await get(
        client, f"{V3}/rooms/{q(room_id)}/context/{q(original)}", bob, limit=2
    )
    assert status == 200, context
    check(context["event"])
    body = await sync(client, bob, filter={"room": {"timeline": {"limit": 50}}})
    [synced] = [
        e for e in body["rooms"]["join"][room_id]["timeline"]["events"] if e["event_id"] == original
    ]
    check(synced)
    assert "room_id" not in synced["unsigned"]["m.relations"]["m.replace"]
    edited = await get_event(client, bob, room_id, second_edit)
    assert "m.relations" not in edited["unsigned"]  # edits have no bundles

    # Redacting the latest edit falls back to the one before, then to none.
    await redact(client, alice, room_id, second_edit)
    event = await get_event(client, bob, room_id, original)
    assert m_relations(event)["m.replace"]["event_id"] == first_edit
    await redact(client, alice, room_id, first_edit)
    event = await get_event(client, bob, room_id, original)
    assert "m.relations" not in event["unsigned"]


async def test_redacted_original_has_no_edit_bundle(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    original = await post(client, alice, room_id, text("hello"))
    await post(client, alice, room_id, edit_of(original, "hello v2"))
    await redact(client, alice, room_id, original)
    event = await get_event(client, bob, room_id, original)
    assert event["content"] == {}
    assert "m.replace" not in m_relations(event)


async def test_reference_bundle_and_annotations_not_bundled(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    target = await post(client, alice, room_id, text("poll"))
    first = await post(client, bob, room_id, reference(target))
    second = await post(client, alice, room_id, reference(target))
    await post(client, bob, room_id, reaction(target, "👍"), "m.reaction")
    event = await get_event(client, bob, room_id, target)
    assert m_relations(event) == {
        "m.reference": {"chunk": [{"event_id": first}, {"event_id": second}]}
    }
    await redact(client, bob, room_id, first)
    event = await get_event(client, bob, room_id, target)
    assert m_relations(event) == {"m.reference": {"chunk": [{"event_id": second}]}}


async def test_thread_summary_and_redaction_of_replies(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    carol = await make_user(client, "carol")
    assert (await join(client, carol, room_id))[0] == 200
    root = await post(client, alice, room_id, text("root"))
    first = await post(client, bob, room_id, in_thread(root, "one"))
    second = await post(client, bob, room_id, in_thread(root, "two"))
    latest_edit = await post(client, bob, room_id, edit_of(second, "two v2"))

    for user, participated in ((alice, True), (bob, True), (carol, False)):
        event = await get_event(client, user, room_id, root)
        thread = m_relations(event)["m.thread"]
        assert thread["count"] == 2
        assert thread["current_user_participated"] is participated, user.user_id
        latest = thread["latest_event"]
        assert latest["event_id"] == second and latest["room_id"] == room_id
        assert latest["content"]["body"] == "two"
        # The latest event carries its own bundle (its edit).
        assert latest["unsigned"]["m.relations"]["m.replace"]["event_id"] == latest_edit

    body = await sync(client, carol, filter={"room": {"timeline": {"limit": 50}}})
    [synced] = [
        e for e in body["rooms"]["join"][room_id]["timeline"]["events"] if e["event_id"] == root
    ]
    assert synced["unsigned"]["m.relations"]["m.thread"]["count"] == 2
    assert "room_id" not in synced["unsigned"]["m.relations"]["m.thread"]["latest_event"]

    await redact(client, bob, room_id, second)
    thread = m_relations(await get_event(client, carol, room_id, root))["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == first
    status, listed = await threads(client, carol, room_id)
    assert ids(listed["chunk"]) == [root]
    await redact(client, bob, room_id, first)
    assert "m.thread" not in m_relations(await get_event(client, carol, room_id, root))
    status, listed = await threads(client, carol, room_id)
    assert status == 200 and listed["chunk"] == []


# --- /threads -------------------------------------------------------------------------


async def test_threads_by_latest_activity_paged_and_participated(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    roots = [await post(client, alice, room_id, text(f"root {i}")) for i in range(3)]
    await post(client, bob, room_id, in_thread(roots[0], "a"))
    await post(client, alice, room_id, in_thread(roots[1], "b"))
    await post(client, alice, room_id, in_thread(roots[2], "c"))
    await post(client, bob, room_id, in_thread(roots[1], "b again"))  # most recent activity
    bobs_root = await post(client, bob, room_id, text("bob's root"))
    await post(client, alice, room_id, in_thread(bobs_root, "d"))
    await post(client, alice, room_id, in_thread(roots[0], "a again"))

    expected = [roots[0], bobs_root, roots[1], roots[2]]
    status, body = await threads(client, bob, room_id)
    assert status == 200, body
    assert ids(body["chunk"]) == expected
    assert "next_batch" not in body
    assert all("m.thread" in m_relations(event) for event in body["chunk"])

    paged: list[str] = []
    token = None
    for _ in range(6):
        status, page = await threads(client, bob, room_id, limit=1, **{"from": token})
        assert status == 200, page
        paged += ids(page["chunk"])
        token = page.get("next_batch")
        if token is None:
            break
    assert paged == expected

    status, mine = await threads(client, bob, room_id, include="participated")
    assert ids(mine["chunk"]) == [roots[0], bobs_root, roots[1]]
    status, alices = await threads(client, alice, room_id, include="participated")
    assert ids(alices["chunk"]) == expected


async def test_threads_bad_parameters(client: Client) -> None:
    alice, _, room_id = await two_in_room(client)
    for params in ({"include": "some"}, {"limit": 0}, {"limit": "x"}, {"from": "nope"}):
        status, body = await threads(client, alice, room_id, **params)
        assert status == 400, (params, body)
        assert body["errcode"] == "M_INVALID_PARAM"
    outsider = await make_user(client, "dave")
    private = await create_room(client, alice, preset="private_chat")
    status, body = await threads(client, outsider, private)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


# --- what clients may send ----------------------------------------------------------------


async def test_thread_validation_and_duplicate_annotations(client: Client) -> None:
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    reply = await post(client, bob, room_id, in_thread(root, "reply"))
    edit = await post(client, alice, room_id, edit_of(root, "root v2"))
    for parent in (reply, edit):
        status, body = await send(client, bob, room_id, in_thread(parent, "nested"), f"n{parent}")
        assert status == 400, body
        assert body["errcode"] == "M_UNKNOWN"
    # A plain rich reply may start a thread (it has no rel_type).
    rich = await post(
        client,
        bob,
        room_id,
        {**text("> quote"), "m.relates_to": {"m.in_reply_to": {"event_id": root}}},
    )
    await post(client, alice, room_id, in_thread(rich, "threaded off a reply"))

    other_room = await create_room(client, alice, preset="public_chat")
    elsewhere = await post(client, alice, other_room, text("elsewhere"))
    status, body = await send(client, alice, room_id, in_thread(elsewhere, "x"), "cross")
    assert status == 400 and body["errcode"] == "M_UNKNOWN"
    status, body = await send(
        client, alice, room_id, reaction("$nowhere:x", "y"), "unk", "m.reaction"
    )
    assert status == 400 and body["errcode"] == "M_UNKNOWN"

    status, first = await send(client, bob, room_id, reaction(root, "👍"), "like", "m.reaction")
    assert status == 200
    # Retrying the same transaction is not a duplicate: the same event ID comes back.
    status, again = await send(client, bob, room_id, reaction(root, "👍"), "like", "m.reaction")
    assert status == 200 and again["event_id"] == first["event_id"]
    status, body = await send(client, bob, room_id, reaction(root, "👍"), "like2", "m.reaction")
    assert status == 400 and body["errcode"] == "M_DUPLICATE_ANNOTATION"
    await post(client, bob, room_id, reaction(root, "🎉"), "m.reaction")  # another key is fine
    await post(client, alice, room_id, reaction(root, "👍"), "m.reaction")  # another sender too
    await redact(client, bob, room_id, first["event_id"])
    await post(client, bob, room_id, reaction(root, "👍"), "m.reaction")  # allowed once redacted


async def test_malformed_relations_are_not_indexed(client: Client) -> None:
    alice, _, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    for relates_to in (
        {"rel_type": 5, "event_id": root},
        {"rel_type": "m.thread", "event_id": ["x"]},
        {"rel_type": "m.thread"},
        "not an object",
    ):
        await post(client, alice, room_id, {**text("odd"), "m.relates_to": relates_to})
    status, body = await relations(client, alice, room_id, root, limit=10)
    assert status == 200 and body["chunk"] == []
    assert "m.relations" not in (await get_event(client, alice, room_id, root))["unsigned"]
    status, body = await threads(client, alice, room_id)
    assert body["chunk"] == []


async def test_relations_from_another_room_never_show(client: Client) -> None:
    """Only federation could index such rows (a client's are refused): the
    index is written directly here, as a remote server's events would be."""
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    other_room = await create_room(client, alice, preset="public_chat")
    stranger = await post(client, alice, other_room, text("from elsewhere"))
    database = hs_of(client).database
    for rel_type in ("m.thread", "m.reference", "m.replace"):
        await database.execute("DELETE FROM event_relations WHERE event_id = ?", stranger)
        await database.execute(
            "INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, sender,"
            " type, stream_ordering, origin_server_ts, thread_id)"
            " VALUES (?, ?, ?, ?, ?, 'm.room.message', 1000000, 1, ?)",
            stranger,
            other_room,
            root,
            rel_type,
            alice.user_id,
            root if rel_type == "m.thread" else None,
        )
        await database.execute(
            "INSERT INTO threads (room_id, thread_id, latest_event_id, latest_stream_ordering)"
            " VALUES (?, ?, ?, 1000000) ON CONFLICT (room_id, thread_id) DO NOTHING",
            other_room,
            root,
            stranger,
        )
        hs_of(client).rooms.events._cache.clear()
        assert "m.relations" not in (await get_event(client, bob, room_id, root))["unsigned"]
        status, body = await relations(client, bob, room_id, root, limit=10, recurse=True)
        assert status == 200 and body["chunk"] == [], rel_type
        status, body = await threads(client, bob, room_id)
        assert status == 200 and body["chunk"] == []
        status, body = await threads(client, alice, other_room)
        assert status == 200 and body["chunk"] == []


async def test_nested_thread_from_federation_is_no_thread(client: Client) -> None:
    """A thread off a thread reply (refused from clients; a remote server could
    send one): the reply gets no thread summary and is not listed as a root."""
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    reply = await post(client, bob, room_id, in_thread(root, "reply"))
    nested = await post(client, alice, room_id, text("nested, as a remote server would"))
    database = hs_of(client).database
    stored = await hs_of(client).rooms.events.get_event(nested)
    assert stored is not None
    await database.execute(
        "INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, sender,"
        " type, stream_ordering, origin_server_ts, thread_id)"
        " VALUES (?, ?, ?, 'm.thread', ?, 'm.room.message', ?, 1, ?)",
        nested,
        room_id,
        reply,
        alice.user_id,
        stored.stream_ordering,
        reply,
    )
    await database.execute(
        "INSERT INTO threads (room_id, thread_id, latest_event_id, latest_stream_ordering)"
        " VALUES (?, ?, ?, ?)",
        room_id,
        reply,
        nested,
        stored.stream_ordering,
    )
    assert "m.thread" not in m_relations(await get_event(client, bob, room_id, reply))
    status, body = await threads(client, bob, room_id)
    assert status == 200 and ids(body["chunk"]) == [root]
    status, body = await relations(client, bob, room_id, root, limit=10, recurse=True)
    assert ids(body["chunk"]) == [nested, reply]


async def test_an_event_served_before_its_relations_gets_them_when_served_again(
    client: Client,
) -> None:
    """Events served without relations are remembered as such (so that a new
    message woken /syncs all show costs the bundles' queries once); a relation
    written afterwards must show the next time the event is served."""
    alice, bob, room_id = await two_in_room(client)
    root = await post(client, alice, room_id, text("root"))
    edited = await post(client, alice, room_id, text("typo"))
    referenced = await post(client, alice, room_id, text("see this"))
    for event_id in (root, edited, referenced):
        assert "m.relations" not in (await get_event(client, bob, room_id, event_id))["unsigned"]
    childless = hs_of(client).rooms.events.childless
    assert all(event_id in childless for event_id in (root, edited, referenced))
    reply = await post(client, bob, room_id, in_thread(root, "a reply"))
    edit = await post(client, alice, room_id, edit_of(edited, "fixed"))
    ref = await post(client, bob, room_id, reference(referenced))
    thread = m_relations(await get_event(client, bob, room_id, root))["m.thread"]
    assert thread["latest_event"]["event_id"] == reply and thread["count"] == 1
    replaced = m_relations(await get_event(client, bob, room_id, edited))["m.replace"]
    assert replaced["event_id"] == edit
    assert m_relations(await get_event(client, bob, room_id, referenced))["m.reference"] == {
        "chunk": [{"event_id": ref}]
    }
    body = await sync(client, bob, filter={"room": {"timeline": {"limit": 50}}})
    shown = {e["event_id"]: e for e in body["rooms"]["join"][room_id]["timeline"]["events"]}
    assert set(m_relations(shown[root])) == {"m.thread"}
    assert set(m_relations(shown[edited])) == {"m.replace"}


async def test_a_new_local_event_is_known_childless_once_committed(client: Client) -> None:
    """No event can point at an event before it exists, so a message sent here
    is known childless from its commit: the /syncs it wakes skip the bundles'
    queries. A relation written to it removes it; an event written with a
    relation of its own is left to the readers (its batch moved the generation)."""
    alice, bob, room_id = await two_in_room(client)
    childless = hs_of(client).rooms.events.childless
    root = await post(client, alice, room_id, text("root"))
    assert root in childless  # never served yet
    reply = await post(client, bob, room_id, in_thread(root, "reply"))
    assert root not in childless
    assert reply not in childless
    thread = m_relations(await get_event(client, bob, room_id, root))["m.thread"]
    assert thread["latest_event"]["event_id"] == reply and thread["count"] == 1
    body = await sync(client, alice, filter={"room": {"timeline": {"limit": 10}}})
    shown = {e["event_id"]: e for e in body["rooms"]["join"][room_id]["timeline"]["events"]}
    assert set(m_relations(shown[root])) == {"m.thread"}


async def test_an_ignoring_reader_does_not_mark_events_childless(client: Client) -> None:
    """A reader who ignores someone does not see their relations: what that
    reader's bundles find says nothing about the event having none."""
    alice, bob, room_id = await two_in_room(client)
    carol = await make_user(client, "carol")
    assert (await join(client, carol, room_id))[0] == 200
    status, _ = await call(
        client,
        "PUT",
        f"/user/{q(bob.user_id)}/account_data/m.ignored_user_list",
        bob,
        {"ignored_users": {carol.user_id: {}}},
    )
    assert status == 200
    root = await post(client, alice, room_id, text("root"))
    await post(client, carol, room_id, in_thread(root, "from carol"))
    hs_of(client).rooms.events.childless.forget([root])
    assert "m.relations" not in (await get_event(client, bob, room_id, root))["unsigned"]
    assert root not in hs_of(client).rooms.events.childless
    thread = m_relations(await get_event(client, alice, room_id, root))["m.thread"]
    assert thread["count"] == 1
