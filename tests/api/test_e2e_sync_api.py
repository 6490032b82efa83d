"""The end-to-end encryption fields of /sync and GET /keys/changes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.api.accounts_support import AccountsClient
from tests.api.e2e_support import Client, Device, call, new_device, new_user
from tests.api.rooms_support import create_room, join, q

pytestmark = pytest.mark.port_server_name


async def _sync(client: Client, device: Device, since: str | None = None) -> dict[str, Any]:
    query = {"timeout": "0"}
    if since is not None:
        query["since"] = since
    status, body = await call(client, "GET", "/sync", device, params=query)
    assert status == 200, body
    return body


async def test_key_counts_and_unused_fallback_types(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    body = await _sync(client, alice)
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == []
    await call(client, "POST", "/keys/upload", alice, {
        "one_time_keys": {"signed_curve25519:A": alice.signed_key("a")},
        "fallback_keys": {"signed_curve25519:F": alice.signed_key("f", fallback=True)},
    })
    body = await _sync(client, alice, body["next_batch"])
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 1}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]
    claim = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    await call(client, "POST", "/keys/claim", bob, claim)
    await call(client, "POST", "/keys/claim", bob, claim)
    body = await _sync(client, alice, body["next_batch"])
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == []


async def test_device_lists_changed_and_left(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    carol = await new_user(client, "carol")
    room = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    start = (await _sync(client, alice))["next_batch"]
    # Bob joins: he newly shares a room with Alice.
    assert (await join(client, bob, room))[0] == 200  # type: ignore[arg-type]
    body = await _sync(client, alice, start)
    assert body["device_lists"] == {"changed": [bob.user_id], "left": []}
    after_join = body["next_batch"]
    # Bob uploads keys; Carol (no shared room) too.
    await call(client, "POST", "/keys/upload", bob, {"device_keys": bob.device_keys()})
    await call(client, "POST", "/keys/upload", carol, {"device_keys": carol.device_keys()})
    body = await _sync(client, alice, after_join)
    assert body["device_lists"] == {"changed": [bob.user_id], "left": []}
    status, changes = await call(client, "GET", "/keys/changes", alice,
                                 params={"from": after_join, "to": body["next_batch"]})
    assert (status, changes) == (200, {"changed": [bob.user_id], "left": []})
    after_keys = body["next_batch"]
    # Alice's own new device is reported to her and to Bob.
    new = await new_device(client, alice, "NEW")
    second = await call(client, "POST", "/keys/upload", new, {"device_keys": new.device_keys()})
    assert second[0] == 200
    body = await _sync(client, alice, after_keys)
    assert body["device_lists"]["changed"] == [alice.user_id]
    # Bob leaves: he no longer shares a room with Alice.
    assert (await call(client, "POST", f"/rooms/{q(room)}/leave", bob, {}))[0] == 200
    body = await _sync(client, alice, body["next_batch"])
    assert body["device_lists"] == {"changed": [], "left": [bob.user_id]}
    # Initial syncs carry no device_lists changes.
    assert (await _sync(client, alice))["device_lists"] == {"changed": [], "left": []}


async def test_a_new_device_is_a_device_list_change(accounts_client: AccountsClient) -> None:
    # Client-Server API, "Tracking the device list for a user": ``changed``
    # lists users "who have updated their device identity or cross-signing
    # keys"; the user's own are included (as Synapse: "Always tell the user
    # about their own devices"), and a login's new device counts before it
    # uploads any key (Synapse records the update when the device is created).
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    carol = await new_user(client, "carol")  # shares no room with anyone
    room = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    assert (await join(client, bob, room))[0] == 200  # type: ignore[arg-type]
    marks = {user.user_id: (await _sync(client, user))["next_batch"] for user in (alice, bob, carol)}
    before = dict(marks)
    await new_device(client, alice, "NEW")
    await new_device(client, carol, "CAROL2")
    for user, changed in ((alice, [alice.user_id]), (bob, [alice.user_id]), (carol, [carol.user_id])):
        body = await _sync(client, user, marks[user.user_id])
        assert body["device_lists"] == {"changed": changed, "left": []}, user.user_id
        marks[user.user_id] = body["next_batch"]
    status, changes = await call(client, "GET", "/keys/changes", bob,
                                 params={"from": before[bob.user_id], "to": marks[bob.user_id]})
    assert (status, changes) == (200, {"changed": [alice.user_id], "left": []})
    # Logging in again on the same device ID creates no device: no change.
    await new_device(client, alice, "NEW")
    assert (await _sync(client, alice, marks[alice.user_id]))["device_lists"] == {"changed": [], "left": []}
    assert (await _sync(client, bob, marks[bob.user_id]))["device_lists"] == {"changed": [], "left": []}


async def test_a_room_members_new_device_wakes_a_long_poll(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    assert (await join(client, bob, room))[0] == 200  # type: ignore[arg-type]
    since = (await _sync(client, alice))["next_batch"]
    started = time.monotonic()
    poll = asyncio.create_task(
        call(client, "GET", "/sync", alice, params={"since": since, "timeout": "10000"})
    )
    await asyncio.sleep(0.1)
    assert not poll.done()
    await new_device(client, bob, "BOB2")
    status, body = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 3
    assert (status, body["device_lists"]) == (200, {"changed": [bob.user_id], "left": []})


async def test_joining_a_room_reports_its_members(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    start = (await _sync(client, bob))["next_batch"]
    await join(client, bob, room)  # type: ignore[arg-type]
    body = await _sync(client, bob, start)
    assert body["device_lists"] == {"changed": [alice.user_id, bob.user_id], "left": []}


async def test_keys_changes_bad_tokens(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    token = (await _sync(client, alice))["next_batch"]
    status, body = await call(client, "GET", "/keys/changes", alice, params={"from": token})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await call(client, "GET", "/keys/changes", alice, params={"from": "junk", "to": token})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await call(client, "GET", "/keys/changes", alice, params={"from": token, "to": token})
    assert (status, body) == (200, {"changed": [], "left": []})
    status, body = await call(client, "GET", "/keys/changes", None, params={"from": token, "to": token})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_left_only_once_no_room_is_shared_any_more(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    carol = await new_user(client, "carol")
    first = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    second = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    for room in (first, second):
        assert (await join(client, bob, room))[0] == 200  # type: ignore[arg-type]
    assert (await join(client, carol, first))[0] == 200  # type: ignore[arg-type]
    start = (await _sync(client, alice))["next_batch"]
    # Alice leaves the first room: she still shares the second with Bob, none with Carol.
    assert (await call(client, "POST", f"/rooms/{q(first)}/leave", alice, {}))[0] == 200
    body = await _sync(client, alice, start)
    assert body["device_lists"] == {"changed": [], "left": [carol.user_id]}
    # Bob leaves the second room: now he is gone too.
    assert (await call(client, "POST", f"/rooms/{q(second)}/leave", bob, {}))[0] == 200
    body = await _sync(client, alice, body["next_batch"])
    assert body["device_lists"] == {"changed": [], "left": [bob.user_id]}
    status, changes = await call(client, "GET", "/keys/changes", alice, params={"from": start, "to": body["next_batch"]})
    assert (status, changes) == (200, {"changed": [], "left": [bob.user_id, carol.user_id]})
    # Bob's later key changes are no longer reported to Alice.
    mark = body["next_batch"]
    await call(client, "POST", "/keys/upload", bob, {"device_keys": bob.device_keys()})
    assert (await _sync(client, alice, mark))["device_lists"] == {"changed": [], "left": []}
