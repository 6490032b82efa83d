"""GET/PUT /user/{userId}/account_data/{type} and /user/{userId}/rooms/{roomId}/account_data/{type}."""

from __future__ import annotations

import pytest

from tests.api.conftest import MakeClient
from tests.api.user_data_fakes import auth, fake_client

ALICE = "@alice:localhost"
GLOBAL = f"/_matrix/client/v3/user/{ALICE}/account_data"
ROOM = f"/_matrix/client/v3/user/{ALICE}/rooms/!room:localhost/account_data"


@pytest.mark.parametrize("base", [GLOBAL, ROOM])
async def test_put_then_get(make_client: MakeClient, base: str) -> None:
    client, _, hs = await fake_client(make_client)
    response = await client.put(f"{base}/org.example.config", json={"a": 1}, headers=auth("alice"))
    assert response.status == 200
    assert await response.json() == {}
    response = await client.get(f"{base}/org.example.config", headers=auth("alice"))
    assert response.status == 200
    assert await response.json() == {"a": 1}
    # Overwrite.
    await client.put(f"{base}/org.example.config", json={"b": [2]}, headers=auth("alice"))
    response = await client.get(f"{base}/org.example.config", headers=auth("alice"))
    assert await response.json() == {"b": [2]}
    assert await hs.account_data.current_position() == 2


async def test_global_and_room_data_are_separate(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    await client.put(f"{GLOBAL}/m.tag", json={"global": True}, headers=auth("alice"))
    response = await client.get(f"{ROOM}/m.tag", headers=auth("alice"))
    assert response.status == 404  # "no inheritance mechanism"
    await client.put(f"{ROOM}/m.tag", json={"tags": {}}, headers=auth("alice"))
    other_room = f"/_matrix/client/v3/user/{ALICE}/rooms/!other:localhost/account_data/m.tag"
    assert (await client.get(other_room, headers=auth("alice"))).status == 404
    assert await (await client.get(f"{GLOBAL}/m.tag", headers=auth("alice"))).json() == {
        "global": True
    }


async def test_missing_is_404(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    for base in (GLOBAL, ROOM):
        response = await client.get(f"{base}/org.example.none", headers=auth("alice"))
        assert response.status == 404
        assert (await response.json())["errcode"] == "M_NOT_FOUND"


async def test_other_users_data_is_forbidden(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    for base in (GLOBAL, ROOM):
        await client.put(f"{base}/org.example", json={"secret": 1}, headers=auth("alice"))
        response = await client.get(f"{base}/org.example", headers=auth("bob"))
        assert response.status == 403
        assert (await response.json())["errcode"] == "M_FORBIDDEN"
        response = await client.put(f"{base}/org.example", json={"x": 1}, headers=auth("bob"))
        assert response.status == 403
        assert (await response.json())["errcode"] == "M_FORBIDDEN"
        response = await client.get(f"{base}/org.example", headers=auth("alice"))
        assert await response.json() == {"secret": 1}


async def test_server_managed_types_are_405(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    for base in (GLOBAL, ROOM):
        for data_type in ("m.fully_read", "m.push_rules"):
            response = await client.put(
                f"{base}/{data_type}", json={"event_id": "$x"}, headers=auth("alice")
            )
            assert response.status == 405
            assert (await response.json())["errcode"] == "M_BAD_JSON"
    assert await hs.account_data.current_position() == 0


async def test_push_rules_readable_as_account_data(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.get(f"{GLOBAL}/m.push_rules", headers=auth("alice"))
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"global"}
    assert "override" in body["global"]


async def test_bad_body(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    for base in (GLOBAL, ROOM):
        for body, errcode in [
            (b"nope", "M_NOT_JSON"),
            (b"[1]", "M_BAD_JSON"),
            (b'"s"', "M_BAD_JSON"),
        ]:
            response = await client.put(f"{base}/org.example", data=body, headers=auth("alice"))
            assert response.status == 400
            assert (await response.json())["errcode"] == errcode
    assert await hs.account_data.current_position() == 0


async def test_invalid_room_id(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    url = f"/_matrix/client/v3/user/{ALICE}/rooms/notaroom/account_data/org.example"
    for method in ("GET", "PUT"):
        response = await client.request(method, url, json={}, headers=auth("alice"))
        assert response.status == 400
        assert (await response.json())["errcode"] == "M_INVALID_PARAM"


async def test_auth_required(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.get(f"{GLOBAL}/org.example")
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_MISSING_TOKEN"


async def test_put_wakes_only_the_owner(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    before = hs.notifier.version(ALICE), hs.notifier.version("@bob:localhost")
    await client.put(f"{GLOBAL}/org.example", json={}, headers=auth("alice"))
    assert hs.notifier.version(ALICE) == before[0] + 1
    assert hs.notifier.version("@bob:localhost") == before[1]


async def test_sync_provider(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    await client.put(f"{GLOBAL}/org.a", json={"n": 1}, headers=auth("alice"))
    await client.put(f"{ROOM}/m.tag", json={"tags": {"u": {}}}, headers=auth("alice"))
    middle = await hs.account_data.current_position()
    await client.put(f"{GLOBAL}/org.a", json={"n": 2}, headers=auth("alice"))
    end = await hs.account_data.current_position()
    assert end == 3

    initial = await hs.account_data.changes_for_user(ALICE, 0, end)
    assert initial.global_events[0] == {"type": "org.a", "content": {"n": 2}}
    assert [event["type"] for event in initial.global_events] == ["org.a", "m.push_rules"]
    assert initial.room_events == {
        "!room:localhost": [{"type": "m.tag", "content": {"tags": {"u": {}}}}]
    }

    incremental = await hs.account_data.changes_for_user(ALICE, middle, end)
    assert incremental.global_events == [{"type": "org.a", "content": {"n": 2}}]
    assert incremental.room_events == {}

    only_other_rooms = await hs.account_data.changes_for_user(ALICE, 0, end, ["!x:localhost"])
    assert only_other_rooms.room_events == {}
    assert (await hs.account_data.changes_for_user("@bob:localhost", 1, end)).global_events == []
