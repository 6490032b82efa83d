"""PUT /sendToDevice and its delivery in /sync: order, acknowledgement,
wildcard, idempotency, the per-response limit."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.services.sync import SyncToken
from tests.api.accounts_support import AccountsClient
from tests.api.e2e_support import Client, Device, call, new_device, new_user
from tests.api.rooms_support import local_id

pytestmark = pytest.mark.port_server_name


async def _send(client: Client, sender: Device, txn: str, messages: Any, event_type: str = "m.test") -> tuple[int, Any]:
    return await call(client, "PUT", f"/sendToDevice/{event_type}/{txn}", sender, {"messages": messages})


async def _sync(client: Client, device: Device, since: str | None = None) -> dict[str, Any]:
    query = {"timeout": "0"}
    if since is not None:
        query["since"] = since
    status, body = await call(client, "GET", "/sync", device, params=query)
    assert status == 200, body
    return body


async def test_messages_are_delivered_in_order_and_removed_once_acknowledged(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    for n in range(3):
        assert await _send(client, alice, f"t{n}", {bob.user_id: {bob.device_id: {"n": n}}}) == (200, {})
    first = await _sync(client, bob)
    assert first["to_device"]["events"] == [
        {"type": "m.test", "sender": alice.user_id, "content": {"n": n}} for n in range(3)
    ]
    # The answer was lost: syncing from the same point delivers them again.
    again = await _sync(client, bob)
    assert again["to_device"]["events"] == first["to_device"]["events"]
    # Syncing with the later token acknowledges them.
    later = await _sync(client, bob, first["next_batch"])
    assert later["to_device"]["events"] == []
    await _send(client, alice, "t3", {bob.user_id: {bob.device_id: {"n": 3}}})
    newer = await _sync(client, bob, first["next_batch"])
    assert [e["content"] for e in newer["to_device"]["events"]] == [{"n": 3}]
    assert (await _sync(client, bob))["to_device"]["events"] == newer["to_device"]["events"]


async def test_wildcard_device_and_unknown_devices(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    bob2 = await new_device(client, bob, "BOB2")
    await _send(client, alice, "t1", {bob.user_id: {"*": {"all": True}, "BOB2": {"only": 2}},
                                     local_id(client, "@nobody"): {"X": {}}, "@r:remote.example": {"*": {}}})
    await _send(client, alice, "t2", {bob.user_id: {"UNKNOWN": {"lost": True}}})
    assert [e["content"] for e in (await _sync(client, bob))["to_device"]["events"]] == [{"all": True}]
    assert [e["content"] for e in (await _sync(client, bob2))["to_device"]["events"]] == [{"only": 2}]


async def test_same_transaction_id_is_sent_once_per_device(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    alice2 = await new_device(client, alice, "ALICE2")
    bob = await new_user(client, "bob")
    message = {bob.user_id: {bob.device_id: {"hello": 1}}}
    assert await _send(client, alice, "same", message) == (200, {})
    assert await _send(client, alice, "same", message) == (200, {})
    assert await _send(client, alice2, "same", message) == (200, {})
    events = (await _sync(client, bob))["to_device"]["events"]
    assert len(events) == 2


async def test_more_than_one_response_holds(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    for n in range(105):
        await _send(client, alice, f"t{n}", {bob.user_id: {bob.device_id: {"n": n}}})
    first = await _sync(client, bob)
    assert [e["content"]["n"] for e in first["to_device"]["events"]] == list(range(100))
    token = SyncToken.parse(first["next_batch"])
    second = await _sync(client, bob, first["next_batch"])
    assert [e["content"]["n"] for e in second["to_device"]["events"]] == list(range(100, 105))
    assert SyncToken.parse(second["next_batch"]).to_device > token.to_device
    third = await _sync(client, bob, second["next_batch"])
    assert third["to_device"]["events"] == []


async def test_send_to_device_bad_input(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    status, body = await call(client, "PUT", "/sendToDevice/m.test/t1", alice, {})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    for messages, errcode in (
        ([], "M_BAD_JSON"),
        ({"bad": {}}, "M_INVALID_PARAM"),
        ({alice.user_id: []}, "M_BAD_JSON"),
        ({alice.user_id: {"D": "text"}}, "M_BAD_JSON"),
    ):
        status, body = await _send(client, alice, "t", messages)
        assert (status, body["errcode"]) == (400, errcode), messages
    status, body = await call(client, "PUT", "/sendToDevice/m.test/t1", alice, data=b"{", headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call(client, "PUT", "/sendToDevice/m.test/t1", None, {"messages": {}})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    # A bad request does not use up its transaction ID.
    bob = await new_user(client, "bob")
    assert await _send(client, alice, "t", {bob.user_id: {bob.device_id: {"ok": 1}}}) == (200, {})
    assert len((await _sync(client, bob))["to_device"]["events"]) == 1


async def test_deleting_a_device_deletes_its_inbox(accounts_client: AccountsClient) -> None:
    from tests.api.e2e_support import password_auth

    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    second = await new_device(client, bob, "SECOND")
    await _send(client, alice, "t1", {bob.user_id: {"SECOND": {"n": 1}, bob.device_id: {"n": 2}}})
    status, _ = await call(client, "DELETE", "/devices/SECOND", bob, {"auth": password_auth(bob)})
    assert status == 200
    # The device ID logged in again starts with an empty inbox; the other device keeps its message.
    second = await new_device(client, bob, "SECOND")
    assert (await _sync(client, second))["to_device"]["events"] == []
    assert [e["content"] for e in (await _sync(client, bob))["to_device"]["events"]] == [{"n": 2}]
    # "*" reaches only the devices that exist now.
    await _send(client, alice, "t2", {bob.user_id: {"*": {"n": 3}}})
    assert [e["content"] for e in (await _sync(client, second))["to_device"]["events"]] == [{"n": 3}]
