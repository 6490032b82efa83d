"""Device management: list, get, rename, delete (with user-interactive auth),
last seen; deleting a device logs it out and removes its keys."""

from __future__ import annotations

import pytest

from ranvier.api.http import HOMESERVER
from ranvier.storage import current_stream_position
from tests.api.accounts_support import AccountsClient, Clock, whoami
from tests.api.e2e_support import call, new_device, new_user, password_auth

pytestmark = pytest.mark.port_server_name


async def test_list_and_get_devices_with_last_seen(accounts_client: AccountsClient, clock: Clock) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    other = await new_device(client, alice, "OTHER")
    status, body = await call(client, "GET", "/devices", alice)
    assert status == 200
    devices = {d["device_id"]: d for d in body["devices"]}
    assert set(devices) == {alice.device_id, "OTHER"}
    mine = devices[alice.device_id]
    assert mine["last_seen_ts"] == clock.now_ms
    assert mine["last_seen_ip"] == "127.0.0.1"
    status, body = await call(client, "GET", "/devices/OTHER", other)
    assert status == 200 and body["device_id"] == "OTHER" and "display_name" not in body


async def test_last_seen_is_written_at_most_once_a_minute(accounts_client: AccountsClient, clock: Clock) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    await call(client, "GET", "/devices", alice)
    first = clock.now_ms
    clock.advance(30_000)
    _, body = await call(client, "GET", f"/devices/{alice.device_id}", alice)
    assert body["last_seen_ts"] == first
    clock.advance(31_000)
    await call(client, "GET", "/devices", alice)
    _status, body = await call(client, "GET", f"/devices/{alice.device_id}", alice)
    assert body["last_seen_ts"] == clock.now_ms


async def test_first_request_after_login_does_not_write_last_seen_again(
    accounts_client: AccountsClient, clock: Clock
) -> None:
    """Login wrote last_seen into the new device's row: a request within the
    minute from the same address writes nothing more (issue 14: a new user's
    first request, often a join, waited for a second durable commit)."""
    client = await accounts_client()
    alice = await new_user(client, "alice")
    logged_in = clock.now_ms
    clock.advance(30_000)
    _, body = await call(client, "GET", f"/devices/{alice.device_id}", alice)
    assert body["last_seen_ts"] == logged_in
    clock.advance(31_000)
    await call(client, "GET", "/devices", alice)
    _, body = await call(client, "GET", f"/devices/{alice.device_id}", alice)
    assert body["last_seen_ts"] == clock.now_ms


async def test_get_unknown_or_other_users_device_is_404(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    assert await call(client, "GET", "/devices/NOPE", alice) == (
        404,
        {"errcode": "M_NOT_FOUND", "error": "Unknown device."},
    )
    status, body = await call(client, "GET", f"/devices/{bob.device_id}", alice)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_rename_device(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    hs = client.app[HOMESERVER]
    before = await current_stream_position(hs.database, "device_lists")
    assert await call(client, "PUT", f"/devices/{alice.device_id}", alice, {"display_name": "Phone"}) == (200, {})
    _, body = await call(client, "GET", f"/devices/{alice.device_id}", alice)
    assert body["display_name"] == "Phone"
    assert await current_stream_position(hs.database, "device_lists") == before + 1
    # No display_name: unchanged.
    assert await call(client, "PUT", f"/devices/{alice.device_id}", alice, {}) == (200, {})
    _status, body = await call(client, "GET", f"/devices/{alice.device_id}", alice)
    assert body["display_name"] == "Phone"


async def test_rename_device_bad_input(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    path = f"/devices/{alice.device_id}"
    status, body = await call(client, "PUT", "/devices/NOPE", alice, {"display_name": "x"})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await call(client, "PUT", path, alice, {"display_name": 5})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await call(client, "PUT", path, alice, {"display_name": "x" * 101})
    assert (status, body["errcode"]) == (400, "M_TOO_LARGE")
    status, body = await call(client, "PUT", path, alice, data=b"{nope", headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call(client, "PUT", path, None, {"display_name": "x"})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await call(client, "GET", "/devices", None, headers={"Authorization": "Bearer rvt_bad"})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_delete_device_needs_password_and_logs_it_out(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    other = await new_device(client, alice, "OTHER")
    # Keys of the device go with it.
    status, _ = await call(client, "POST", "/keys/upload", other, {
        "device_keys": other.device_keys(),
        "one_time_keys": {"signed_curve25519:A": other.signed_key("k")},
    })
    assert status == 200
    # No body at all: the flows.
    status, body = await call(client, "DELETE", "/devices/OTHER", alice)
    assert status == 401
    assert body["flows"] == [{"stages": ["m.login.password"]}]
    session = body["session"]
    # Wrong password.
    wrong = password_auth(alice, session) | {"password": "nope"}
    status, body = await call(client, "DELETE", "/devices/OTHER", alice, {"auth": wrong})
    assert (status, body["errcode"]) == (401, "M_FORBIDDEN")
    assert (await whoami(client, other.token))[0] == 200
    status, body = await call(client, "DELETE", "/devices/OTHER", alice, {"auth": password_auth(alice, session)})
    assert (status, body) == (200, {})
    status, body = await whoami(client, other.token)
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await call(client, "GET", "/devices", alice)
    assert [d["device_id"] for d in body["devices"]] == [alice.device_id]
    status, body = await call(client, "POST", "/keys/query", alice, {"device_keys": {alice.user_id: []}})
    assert body["device_keys"] == {alice.user_id: {}}
    hs = client.app[HOMESERVER]
    assert await hs.e2e_keys.one_time_key_counts(alice.user_id, "OTHER") == {"signed_curve25519": 0}


async def test_delete_unknown_device_after_auth_is_ok(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    status, body = await call(client, "DELETE", "/devices/NOPE", alice, {"auth": password_auth(alice)})
    assert (status, body) == (200, {})
    assert (await whoami(client, alice.token))[0] == 200


async def test_delete_devices(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    one = await new_device(client, alice, "ONE")
    two = await new_device(client, alice, "TWO")
    status, body = await call(client, "POST", "/delete_devices", alice, {"devices": ["ONE", "TWO"]})
    assert status == 401 and body["flows"] == [{"stages": ["m.login.password"]}]
    # The parameters of the first request are kept for the session.
    status, body = await call(
        client, "POST", "/delete_devices", alice, {"auth": password_auth(alice, body["session"])}
    )
    assert (status, body) == (200, {})
    assert (await whoami(client, one.token))[0] == 401
    assert (await whoami(client, two.token))[0] == 401
    assert (await whoami(client, alice.token))[0] == 200


async def test_delete_devices_bad_input(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    status, body = await call(client, "POST", "/delete_devices", alice, {"devices": "ONE"})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await call(client, "POST", "/delete_devices", alice, {"devices": [1]})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await call(client, "POST", "/delete_devices", alice, {"auth": password_auth(alice)})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await call(client, "POST", "/delete_devices", alice, data=b"[", headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call(client, "POST", "/delete_devices", alice, [])
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await call(client, "POST", "/delete_devices", None, {"devices": []})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_logout_and_logout_all_forget_the_devices_keys(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    other = await new_device(client, alice, "OTHER")
    hs = client.app[HOMESERVER]
    for device in (alice, other):
        status, _ = await call(client, "POST", "/keys/upload", device, {
            "device_keys": device.device_keys(),
            "one_time_keys": {"signed_curve25519:A": device.signed_key("k")},
        })
        assert status == 200
    before = await current_stream_position(hs.database, "device_lists")
    assert (await call(client, "POST", "/logout", other, {}))[0] == 200
    assert await current_stream_position(hs.database, "device_lists") == before + 1
    assert await hs.e2e_keys.one_time_key_counts(alice.user_id, "OTHER") == {"signed_curve25519": 0}
    # Logging in again with the same device ID does not bring the old keys back.
    again = await new_device(client, alice, "OTHER")
    status, body = await call(client, "POST", "/keys/query", again, {"device_keys": {alice.user_id: []}})
    assert list(body["device_keys"][alice.user_id]) == [alice.device_id]
    assert (await call(client, "POST", "/logout/all", alice, {}))[0] == 200
    assert await hs.e2e_keys.one_time_key_counts(alice.user_id, alice.device_id) == {"signed_curve25519": 0}
    assert await hs.e2e_keys.store.get_device_keys(alice.user_id, alice.device_id) is None
