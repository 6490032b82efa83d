"""Property (issue 9): arbitrary JSON through every write endpoint that takes
free-form content, read back through every read path, on both engines.

No answer is a 5xx; what a write accepts is served back identically by each
read path (/event, /messages, /sync, /state, account data, profile, filters,
to-device, presence, devices); what it refuses is a 4xx with an ``errcode``.
Values include NUL and every control character (tests/core/json_strategies.py),
floats, and objects nested around the depth limit.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranvier.core.input_limits import MAX_JSON_DEPTH
from tests.api.json_limits_support import nested_value, raw
from tests.api.rooms_support import V3, Client, User, create_room, make_user, q
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    get,
    make_sync_client_fixture,
    sync,
)
from tests.core.json_strategies import JSON_OBJECTS, TEXT

FLOATS = st.floats(allow_nan=False, allow_infinity=False)
#: Objects: the shared strategy, ones with floats, and ones nested around the limit.
CONTENT = st.one_of(
    JSON_OBJECTS,
    st.dictionaries(TEXT, st.one_of(FLOATS, TEXT), max_size=3),
    st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3).map(nested_value),
)


@dataclass
class Env:
    client: Client
    alice: User
    bob: User
    room_id: str
    since: str = ""
    counter: itertools.count[int] = field(default_factory=itertools.count)


@pytest.fixture
async def env(migrated_dsn: str, make_sync_client: MakeSyncClient) -> AsyncIterator[Env]:
    client = await make_sync_client(migrated_dsn)
    alice, bob = await make_user(client, "alice"), await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    status, _ = await raw(client, "POST", f"/rooms/{q(room_id)}/join", bob, b"{}")
    assert status == 200
    result = Env(client, alice, bob, room_id)
    result.since = (await sync(client, bob))["next_batch"]
    yield result


def accepted(status: int, answer: Any, what: str) -> bool:
    """True for a 200; a refusal must be a 4xx with an errcode, never a 5xx."""
    assert status < 500, (what, answer)
    if status == 200:
        return True
    assert 400 <= status < 500 and isinstance(answer.get("errcode"), str), (what, status, answer)
    return False


async def put(env: Env, user: User, path: str, body: Any, method: str = "PUT") -> tuple[int, Any]:
    return await raw(env.client, method, path, user, orjson.dumps(body))


async def read(env: Env, user: User, path: str, **params: Any) -> Any:
    status, body = await get(env.client, V3 + path, user, **params)
    assert status == 200, (path, body)
    return body


async def check_room_events(env: Env, content: dict[str, Any]) -> None:
    """A message and a state event with ``content``: /event, /messages, /state, /sync."""
    n = next(env.counter)
    room = f"/rooms/{q(env.room_id)}"
    status, sent = await put(env, env.alice, f"{room}/send/m.test/t{n}", content)
    message_id = sent["event_id"] if accepted(status, sent, "send") else None
    status, state = await put(env, env.alice, f"{room}/state/m.test/k{n}", content)
    state_id = state["event_id"] if accepted(status, state, "state") else None
    assert (message_id is None) == (state_id is None)  # one rule for both
    body = await sync(env.client, env.bob, since=env.since)
    env.since = body["next_batch"]
    if message_id is None:
        return
    event = await read(env, env.bob, f"{room}/event/{q(message_id)}")
    assert event["content"] == content
    chunk = (await read(env, env.bob, f"{room}/messages", dir="b", limit=5))["chunk"]
    assert [e["content"] for e in chunk if e["event_id"] == message_id] == [content]
    assert await read(env, env.bob, f"{room}/state/m.test/k{n}") == content
    full_state = await read(env, env.bob, f"{room}/state")
    assert [e["content"] for e in full_state if e["event_id"] == state_id] == [content]
    timeline = body["rooms"]["join"][env.room_id]["timeline"]["events"]
    served = {e["event_id"]: e["content"] for e in timeline}
    assert (served[message_id], served[state_id]) == (content, content)


async def check_account_data(env: Env, content: dict[str, Any]) -> None:
    me = q(env.alice.user_id)
    room_path = f"/user/{me}/rooms/{q(env.room_id)}/account_data/m.p"
    kept = []
    for path in (f"/user/{me}/account_data/m.p", room_path):
        status, answer = await put(env, env.alice, path, content)
        if accepted(status, answer, path):
            assert await read(env, env.alice, path) == content
        kept.append(status == 200)
    body = await sync(env.client, env.alice)
    room_events = body["rooms"]["join"][env.room_id]["account_data"]["events"]
    for events, stored in ((body["account_data"]["events"], kept[0]), (room_events, kept[1])):
        if stored:
            assert [e["content"] for e in events if e["type"] == "m.p"] == [content]


async def check_profile_and_filter(env: Env, content: dict[str, Any]) -> None:
    me = q(env.alice.user_id)
    status, answer = await put(env, env.alice, f"/profile/{me}/m.p", {"m.p": content})
    if accepted(status, answer, "profile"):
        assert await read(env, env.bob, f"/profile/{me}/m.p") == {"m.p": content}
        assert (await read(env, env.bob, f"/profile/{me}"))["m.p"] == content
    status, answer = await put(env, env.alice, f"/user/{me}/filter", content, method="POST")
    if accepted(status, answer, "filter"):
        stored = await read(env, env.alice, f"/user/{me}/filter/{answer['filter_id']}")
        assert stored == content


async def check_to_device(env: Env, content: dict[str, Any]) -> None:
    n = next(env.counter)
    messages = {env.bob.user_id: {env.bob.device_id: content}}
    status, answer = await put(env, env.alice, f"/sendToDevice/m.p/d{n}", {"messages": messages})
    body = await sync(env.client, env.bob, since=env.since)
    env.since = body["next_batch"]
    events = [e["content"] for e in body["to_device"]["events"] if e["type"] == "m.p"]
    assert events == ([content] if accepted(status, answer, "to-device") else [])


async def check_texts(env: Env, text: str) -> None:
    """Free text outside JSON content: presence status_msg, display names."""
    me = q(env.alice.user_id)
    status, answer = await put(
        env, env.alice, f"/presence/{me}/status", {"presence": "online", "status_msg": text}
    )
    if accepted(status, answer, "presence"):
        assert (await read(env, env.bob, f"/presence/{me}/status")).get("status_msg") == text
    path = f"/devices/{q(env.alice.device_id)}"
    status, answer = await put(env, env.alice, path, {"display_name": text})
    if accepted(status, answer, "device"):
        assert (await read(env, env.alice, path))["display_name"] == text
    status, answer = await put(env, env.alice, f"/profile/{me}/displayname", {"displayname": text})
    if accepted(status, answer, "displayname"):
        assert await read(env, env.bob, f"/profile/{me}/displayname") == {"displayname": text}


async def check_create_room(env: Env, content: dict[str, Any]) -> None:
    body = {
        "creation_content": content,
        "initial_state": [{"type": "m.p", "state_key": "", "content": content}],
    }
    status, answer = await put(env, env.alice, "/createRoom", body, method="POST")
    if accepted(status, answer, "createRoom"):
        room = f"/rooms/{q(answer['room_id'])}"
        assert await read(env, env.alice, f"{room}/state/m.p") == content
        create = await read(env, env.alice, f"{room}/state/m.room.create")
        assert {key: create[key] for key in content} == content


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=CONTENT, text=st.one_of(TEXT, TEXT.map(lambda t: f"{t}\x00{t}")))
async def test_arbitrary_json_round_trips_or_is_refused_cleanly(
    env: Env, content: dict[str, Any], text: str
) -> None:
    await check_room_events(env, content)
    await check_account_data(env, content)
    await check_profile_and_filter(env, content)
    await check_to_device(env, content)
    await check_texts(env, text)
    await check_create_room(env, content)
