"""POST /search (Client-Server API, "Server Side Search"; search.yaml), through
the real HTTP stack on both engines. Every test states the exact answer, so
that both engines give the same answers to the same queries."""

from __future__ import annotations

from typing import Any

import pytest

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
from tests.api.search_support import MakeDbClient, make_db_client_fixture  # noqa: F401


async def text(client: Client, user: User, room_id: str, body: str, **extra: Any) -> str:
    content = {"msgtype": "m.text", "body": body, **extra}
    status, payload = await send(client, user, room_id, content, f"t{hash((body, str(extra)))}")
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


async def search(
    client: Client,
    user: User,
    criteria: dict[str, Any],
    next_batch: str | None = None,
    *,
    status: int = 200,
) -> Any:
    path = "/search" + ("" if next_batch is None else f"?next_batch={q(next_batch)}")
    got, payload = await call(
        client, "POST", path, user, {"search_categories": {"room_events": criteria}}
    )
    assert got == status, payload
    return payload["search_categories"]["room_events"] if status == 200 else payload


def ids(result: dict[str, Any]) -> list[str]:
    return [item["result"]["event_id"] for item in result["results"]]


async def two_users_room(client: Client) -> tuple[User, User, str]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    assert (await join(client, bob, room_id))[0] == 200
    return alice, bob, room_id


# --- matching -------------------------------------------------------------------------


async def test_words_match_as_prefixes_anded_case_insensitive(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, bob, room_id = await two_users_room(client)
    pasta = await text(client, alice, room_id, "Cooking PASTA tonight")
    pizza = await text(client, bob, room_id, "pizza or pasta? cooking is fun")
    await text(client, bob, room_id, "nothing to see")
    recent = {"order_by": "recent"}
    assert ids(await search(client, alice, {"search_term": "pasta", **recent})) == [pizza, pasta]
    assert ids(await search(client, alice, {"search_term": "PAS", **recent})) == [pizza, pasta]
    assert ids(await search(client, alice, {"search_term": "cook pizza", **recent})) == [pizza]
    assert ids(await search(client, alice, {"search_term": "asta", **recent})) == []
    result = await search(client, bob, {"search_term": "cook", **recent})
    assert ids(result) == [pizza, pasta]
    assert result["count"] == 2
    assert result["highlights"] == ["cook", "cooking"]
    assert "next_batch" not in result
    first = result["results"][0]
    assert first["result"]["content"]["body"] == "pizza or pasta? cooking is fun"
    assert first["result"]["room_id"] == room_id
    assert isinstance(first["rank"], float)


async def test_name_and_topic_keys(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, _, room_id = await two_users_room(client)
    status, name = await put_state(
        client, alice, room_id, "m.room.name", "", {"name": "Garden club"}
    )
    assert status == 200
    status, topic = await put_state(
        client,
        alice,
        room_id,
        "m.room.topic",
        "",
        {
            "topic": "roses",
            "m.topic": {
                "m.text": [
                    {"body": "tulips in spring"},
                    {"mimetype": "text/html", "body": "<b>lilies</b>"},
                ]
            },
        },
    )
    assert status == 200
    message = await text(client, alice, room_id, "garden party tomorrow")
    recent = {"order_by": "recent"}
    every = await search(client, alice, {"search_term": "garden", **recent})
    assert ids(every) == [message, name["event_id"]]
    names = await search(client, alice, {"search_term": "garden", "keys": ["content.name"]})
    assert ids(names) == [name["event_id"]]
    assert ids(await search(client, alice, {"search_term": "tulips"})) == [topic["event_id"]]
    assert ids(await search(client, alice, {"search_term": "roses"})) == [topic["event_id"]]
    assert ids(await search(client, alice, {"search_term": "lilies"})) == []
    bodies = await search(client, alice, {"search_term": "garden", "keys": ["content.body"]})
    assert ids(bodies) == [message]


async def test_rank_order_puts_the_most_relevant_first(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, _, room_id = await two_users_room(client)
    many = await text(client, alice, room_id, "kiwi kiwi kiwi")
    once = await text(
        client, alice, room_id, "a long message that mentions kiwi only once among many words"
    )
    ranked = await search(client, alice, {"search_term": "kiwi"})
    assert ids(ranked) == [many, once]
    assert ranked["results"][0]["rank"] > ranked["results"][1]["rank"]
    recent = await search(client, alice, {"search_term": "kiwi", "order_by": "recent"})
    assert ids(recent) == [once, many]


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ('"', []),
        ("*", []),
        ("", []),
        ("   ", []),
        ("-", []),
        (":", []),
        ("NEAR(", ["near"]),
        ("AND", ["and"]),
        ('"apple', ["apple", "near", "and", "quote"]),
        ("app*", ["apple", "near", "and", "quote"]),
        ("apple AND banana", ["and"]),
        ("apple OR banana", []),
        ("NEAR(apple banana)", ["near"]),
        ("-apple", ["apple", "near", "and", "quote"]),
        ("body:apple", []),
        ("'apple'", ["apple", "near", "and", "quote"]),
        ("apple\\", ["apple", "near", "and", "quote"]),
        ("ap%ple", []),
        ("a_p", []),
    ],
)
async def test_fts_syntax_in_the_term_is_never_syntax(
    make_db_client: MakeDbClient, term: str, expected: list[str]
) -> None:
    client = await make_db_client()
    alice, _, room_id = await two_users_room(client)
    made = {
        "apple": await text(client, alice, room_id, "apple"),
        "near": await text(client, alice, room_id, "NEAR(apple banana) text"),
        "and": await text(client, alice, room_id, "apple AND banana"),
        "quote": await text(client, alice, room_id, 'say "apple" * - : now'),
    }
    await text(client, alice, room_id, "banana")
    result = await search(client, alice, {"search_term": term, "order_by": "recent"})
    assert ids(result) == [made[name] for name in reversed(list(made)) if name in expected]
    assert result["count"] == len(expected)


async def test_words_of_any_script_and_long_words(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, _, room_id = await two_users_room(client)
    german = await text(client, alice, room_id, "Grüße aus MÜNCHEN, café_au_lait")
    japanese = await text(client, alice, room_id, "漢字テスト です")
    long_word = "x" * 150
    long = await text(client, alice, room_id, f"a {long_word}y end")
    for term, expected in [
        ("münch", [german]),
        ("GRÜSSE", []),
        ("grü", [german]),
        ("cafe", []),
        ("café lait", [german]),
        ("漢字", [japanese]),
        ("テスト", []),
        ("x" * 120, [long]),
        ("x" * 150 + "z", [long]),  # both cut to 100 characters
        ("x" * 99 + "y", []),
    ]:
        assert ids(await search(client, alice, {"search_term": term})) == expected, term


# --- pagination ---------------------------------------------------------------------------


async def _page_through(
    client: Client, user: User, criteria: dict[str, Any]
) -> tuple[list[str], int, set[int]]:
    """Every result over every page, the number of pages, and the counts given."""
    seen: list[str] = []
    counts: set[int] = set()
    token: str | None = None
    pages = 0
    while True:
        result = await search(client, user, criteria, token)
        pages += 1
        seen.extend(ids(result))
        counts.add(result["count"])
        token = result.get("next_batch")
        if token is None:
            return seen, pages, counts


@pytest.mark.parametrize("order", ["recent", "rank"])
async def test_next_batch_pages_through_every_result_once(
    make_db_client: MakeDbClient, order: str
) -> None:
    client = await make_db_client()
    alice, bob, room_id = await two_users_room(client)
    made = [await text(client, alice, room_id, f"note number {i}") for i in range(7)]
    await text(client, bob, room_id, "unrelated")
    criteria = {"search_term": "note", "order_by": order, "filter": {"limit": 3}}
    first = await search(client, alice, criteria)
    assert len(first["results"]) == 3 and first["count"] == 7
    seen, pages, counts = await _page_through(client, alice, criteria)
    assert pages == 3
    assert counts == {7}  # the whole search's count on every page
    assert sorted(seen) == sorted(made) and len(seen) == 7
    if order == "recent":
        assert seen == list(reversed(made))


async def test_bad_next_batch_is_400(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, _, room_id = await two_users_room(client)
    for i in range(3):
        await text(client, alice, room_id, f"pear {i}")
    page = await search(client, alice, {"search_term": "pear", "filter": {"limit": 1}})
    rank_token = page["next_batch"]
    for token in ["nonsense", "!!!", "e30", "", "eyJvIjoicmFuayIsInAiOi0xfQ", rank_token + "x"]:
        error = await search(client, alice, {"search_term": "pear"}, token, status=400)
        assert error["errcode"] == "M_INVALID_PARAM", token
    # A rank token is no cursor for the recent order.
    error = await search(
        client, alice, {"search_term": "pear", "order_by": "recent"}, rank_token, status=400
    )
    assert error["errcode"] == "M_INVALID_PARAM"


async def test_huge_limits_are_capped(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, _, room_id = await two_users_room(client)
    for i in range(50):
        await text(client, alice, room_id, f"filler {i}")
    made = [await text(client, alice, room_id, f"plum {i}") for i in range(3)]
    result = await search(
        client,
        alice,
        {
            "search_term": "plum",
            "order_by": "recent",
            "filter": {"limit": 2**53},
            "event_context": {"before_limit": 2**53, "after_limit": 10**12},
        },
    )
    assert ids(result) == list(reversed(made))
    context = result["results"][0]["context"]
    assert len(context["events_before"]) == 50  # capped at MAX_CONTEXT
    assert context["events_before"][0]["event_id"] == made[1]
    assert context["events_after"] == []


# --- context, groups, state -----------------------------------------------------------


async def test_event_context_with_profiles_and_tokens(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, bob, room_id = await two_users_room(client)
    status, _ = await call(
        client, "PUT", f"/profile/{q(bob.user_id)}/displayname", bob, {"displayname": "Bobby"}
    )
    assert status == 200
    before = [await text(client, alice, room_id, f"before {i}") for i in range(3)]
    hit = await text(client, bob, room_id, "the needle")
    after = [await text(client, alice, room_id, f"after {i}") for i in range(3)]
    result = await search(
        client,
        alice,
        {
            "search_term": "needle",
            "event_context": {"before_limit": 2, "after_limit": 2, "include_profile": True},
        },
    )
    assert ids(result) == [hit]
    context = result["results"][0]["context"]
    assert [e["event_id"] for e in context["events_before"]] == [before[2], before[1]]
    assert [e["event_id"] for e in context["events_after"]] == after[:2]
    assert context["profile_info"] == {
        alice.user_id: {"displayname": "alice"},
        bob.user_id: {"displayname": "Bobby"},
    }
    # start/end are /messages tokens going on from the context.
    status, older = await call(
        client,
        "GET",
        f"/rooms/{q(room_id)}/messages?dir=b&limit=1&from={q(context['start'])}",
        alice,
    )
    assert status == 200 and older["chunk"][0]["event_id"] == before[0]
    status, newer = await call(
        client,
        "GET",
        f"/rooms/{q(room_id)}/messages?dir=f&limit=1&from={q(context['end'])}",
        alice,
    )
    assert status == 200 and newer["chunk"][0]["event_id"] == after[2]
    plain = await search(client, alice, {"search_term": "needle"})
    assert "context" not in plain["results"][0]


async def test_groupings_by_room_and_sender(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, bob, room_a = await two_users_room(client)
    room_b = await create_room(client, bob, preset="public_chat")
    assert (await join(client, alice, room_b))[0] == 200
    a1 = await text(client, alice, room_a, "melon one")
    b1 = await text(client, bob, room_b, "melon two")
    a2 = await text(client, bob, room_a, "melon three")
    criteria = {
        "search_term": "melon",
        "order_by": "recent",
        "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
    }
    result = await search(client, alice, criteria)
    assert ids(result) == [a2, b1, a1]
    assert result["groups"] == {
        "room_id": {
            room_a: {"order": 0, "results": [a2, a1]},
            room_b: {"order": 1, "results": [b1]},
        },
        "sender": {
            bob.user_id: {"order": 0, "results": [a2, b1]},
            alice.user_id: {"order": 1, "results": [a1]},
        },
    }
    # A group's next_batch goes on within its group.
    paged = await search(client, alice, {**criteria, "filter": {"limit": 1}})
    assert ids(paged) == [a2]
    group_token = paged["groups"]["room_id"][room_a]["next_batch"]
    rest = await search(client, alice, {**criteria, "filter": {"limit": 5}}, group_token)
    assert ids(rest) == [a1]
    ranked = {**criteria, "order_by": "rank", "filter": {"limit": 1}}
    first = await search(client, alice, ranked)
    sender = first["results"][0]["result"]["sender"]
    token = first["groups"]["sender"][sender]["next_batch"]
    more = await search(client, alice, {**ranked, "filter": {"limit": 5}}, token)
    assert {e["result"]["sender"] for e in more["results"]} == {sender}
    assert len(more["results"]) == (1 if sender == bob.user_id else 0)


async def test_include_state(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, _, room_id = await two_users_room(client)
    await put_state(client, alice, room_id, "m.room.name", "", {"name": "Fig room"})
    await text(client, alice, room_id, "fig")
    result = await search(client, alice, {"search_term": "fig", "include_state": True})
    assert list(result["state"]) == [room_id]
    types = {(e["type"], e["state_key"]) for e in result["state"][room_id]}
    assert ("m.room.name", "") in types and ("m.room.create", "") in types
    assert "state" not in await search(client, alice, {"search_term": "fig"})


# --- filter ---------------------------------------------------------------------------


async def test_filter_rooms_senders_types(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, bob, room_a = await two_users_room(client)
    room_b = await create_room(client, alice, preset="public_chat")
    a = await text(client, alice, room_a, "grape a")
    b = await text(client, bob, room_a, "grape b")
    c = await text(client, alice, room_b, "grape c")
    status, name = await put_state(client, alice, room_b, "m.room.name", "", {"name": "grape"})
    assert status == 200
    base = {"search_term": "grape", "order_by": "recent"}
    assert ids(await search(client, alice, {**base, "filter": {"rooms": [room_a]}})) == [b, a]
    assert ids(await search(client, alice, {**base, "filter": {"not_rooms": [room_a]}})) == [
        name["event_id"],
        c,
    ]
    assert ids(await search(client, alice, {**base, "filter": {"senders": [bob.user_id]}})) == [b]
    assert ids(
        await search(client, alice, {**base, "filter": {"not_senders": [alice.user_id]}})
    ) == [b]
    assert ids(await search(client, alice, {**base, "filter": {"types": ["m.room.name"]}})) == [
        name["event_id"]
    ]
    assert ids(await search(client, alice, {**base, "filter": {"not_types": ["m.room.*"]}})) == []


# --- who sees what --------------------------------------------------------------------


async def test_visibility_left_user_and_outsider(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, bob, room_id = await two_users_room(client)
    carol = await make_user(client, "carol")
    early = await text(client, alice, room_id, "secret early")
    status, _ = await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {})
    assert status == 200
    late = await text(client, alice, room_id, "secret late")
    assert ids(await search(client, alice, {"search_term": "secret", "order_by": "recent"})) == [
        late,
        early,
    ]
    left = await search(client, bob, {"search_term": "secret", "order_by": "recent"})
    assert ids(left) == [early]
    outsider = await search(client, carol, {"search_term": "secret"})
    assert ids(outsider) == [] and outsider["count"] == 0


async def test_joined_history_visibility_hides_what_came_before_the_join(
    make_db_client: MakeDbClient,
) -> None:
    client = await make_db_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    status, _ = await put_state(
        client, alice, room_id, "m.room.history_visibility", "", {"history_visibility": "joined"}
    )
    assert status == 200
    await text(client, alice, room_id, "cherry before")
    assert (await join(client, bob, room_id))[0] == 200
    after = await text(client, alice, room_id, "cherry after")
    assert ids(await search(client, bob, {"search_term": "cherry"})) == [after]


async def test_redacted_encrypted_and_edited(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice, bob, room_id = await two_users_room(client)
    gone = await text(client, alice, room_id, "lemon to redact")
    kept = await text(client, alice, room_id, "lemon to keep")
    status, _ = await call(client, "PUT", f"/rooms/{q(room_id)}/redact/{q(gone)}/r1", alice, {})
    assert status == 200
    assert ids(await search(client, alice, {"search_term": "lemon"})) == [kept]
    status, _ = await send(
        client,
        alice,
        room_id,
        {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "lemon", "body": "lemon"},
        "enc",
        "m.room.encrypted",
    )
    assert status == 200
    assert ids(await search(client, alice, {"search_term": "lemon"})) == [kept]
    # An edit: the original is found by its new text, once, and no more by the old.
    original = await text(client, alice, room_id, "orange juice")
    edit = {
        "m.new_content": {"msgtype": "m.text", "body": "mango smoothie"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }
    edit_id = await text(client, alice, room_id, "* mango smoothie", **edit)
    assert ids(await search(client, alice, {"search_term": "mango"})) == [original]
    assert ids(await search(client, alice, {"search_term": "orange"})) == []
    # Someone else's "edit" changes nothing.
    forged = {
        "m.new_content": {"msgtype": "m.text", "body": "papaya"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }
    await text(client, bob, room_id, "* papaya", **forged)
    assert ids(await search(client, alice, {"search_term": "papaya"})) == []
    assert ids(await search(client, alice, {"search_term": "mango"})) == [original]
    assert await hs_of(client).search_store.index_size() == 2
    # Redacting the edit brings the original's own words back.
    status, _ = await call(client, "PUT", f"/rooms/{q(room_id)}/redact/{q(edit_id)}/r2", alice, {})
    assert status == 200
    assert ids(await search(client, alice, {"search_term": "orange"})) == [original]
    assert ids(await search(client, alice, {"search_term": "mango"})) == []


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"search_categories": []}, "M_BAD_JSON"),
        ({"search_categories": {"room_events": []}}, "M_BAD_JSON"),
        ({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM"),
        ({"search_categories": {"room_events": {"search_term": 5}}}, "M_BAD_JSON"),
        (
            {"search_categories": {"room_events": {"search_term": "x", "order_by": "new"}}},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "keys": ["content.url"]}}},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "keys": "content.body"}}},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": 0}}}},
            "M_INVALID_PARAM",
        ),
        ({"search_categories": {"room_events": {"search_term": "x", "filter": []}}}, "M_BAD_JSON"),
        (
            {
                "search_categories": {
                    "room_events": {"search_term": "x", "event_context": {"before_limit": -1}}
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "search_categories": {
                    "room_events": {"search_term": "x", "event_context": {"after_limit": "5"}}
                }
            },
            "M_BAD_JSON",
        ),
        (
            {
                "search_categories": {
                    "room_events": {
                        "search_term": "x",
                        "groupings": {"group_by": [{"key": "type"}]},
                    }
                }
            },
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "include_state": "yes"}}},
            "M_BAD_JSON",
        ),
    ],
)
async def test_bad_bodies_are_400(
    make_db_client: MakeDbClient, body: dict[str, Any], errcode: str
) -> None:
    client = await make_db_client()
    alice = await make_user(client, "alice")
    status, payload = await call(client, "POST", "/search", alice, body)
    assert (status, payload["errcode"]) == (400, errcode), payload


async def test_no_room_events_category_and_auth(make_db_client: MakeDbClient) -> None:
    client = await make_db_client()
    alice = await make_user(client, "alice")
    assert await call(client, "POST", "/search", alice, {"search_categories": {}}) == (
        200,
        {"search_categories": {}},
    )
    status, payload = await call(client, "POST", "/search", None, {"search_categories": {}})
    assert (status, payload["errcode"]) == (401, "M_MISSING_TOKEN")
    response = await client.post(
        "/_matrix/client/v3/search", data=b"{not json", headers=alice.headers
    )
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_NOT_JSON"
