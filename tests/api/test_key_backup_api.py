"""Server-side key backup: versions, keys at three levels, replacement rules,
etag and count, wrong and unknown versions."""

from __future__ import annotations

from typing import Any

from ranvier.services.key_backup import should_replace
from ranvier.storage.key_backup import BackupKeyRow
from tests.api.accounts_support import AccountsClient
from tests.api.e2e_support import Client, Device, call, new_user

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:localhost"


def key(index: int = 0, forwarded: int = 0, verified: bool = False, data: str = "x") -> dict[str, Any]:
    return {
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ciphertext": data},
    }


async def _version(client: Client, user: Device) -> str:
    status, body = await call(client, "POST", "/room_keys/version", user,
                              {"algorithm": ALG, "auth_data": {"public_key": "pk"}})
    assert status == 200
    version: str = body["version"]
    return version


def test_replacement_rules() -> None:
    def row(index: int, forwarded: int, verified: bool) -> BackupKeyRow:
        return BackupKeyRow(ROOM, "s", index, forwarded, verified, "{}")

    assert should_replace(None, row(5, 5, False))
    assert should_replace(row(0, 0, False), row(9, 9, True))  # verified wins
    assert not should_replace(row(9, 9, True), row(0, 0, False))
    assert should_replace(row(5, 0, True), row(4, 9, True))  # then lower first_message_index
    assert not should_replace(row(4, 9, True), row(5, 0, True))
    assert should_replace(row(4, 2, False), row(4, 1, False))  # then lower forwarded_count
    assert not should_replace(row(4, 1, False), row(4, 1, False))
    assert not should_replace(row(4, 1, False), row(4, 2, False))


async def test_versions(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    status, body = await call(client, "GET", "/room_keys/version", alice)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert await _version(client, alice) == "1"
    assert await _version(client, alice) == "2"
    status, body = await call(client, "GET", "/room_keys/version", alice)
    assert (status, body) == (200, {"algorithm": ALG, "auth_data": {"public_key": "pk"}, "count": 0,
                                    "etag": "0", "version": "2"})
    status, body = await call(client, "GET", "/room_keys/version/1", alice)
    assert (status, body["version"]) == (200, "1")
    for path in ("/room_keys/version/9", "/room_keys/version/abc"):
        status, body = await call(client, "GET", path, alice)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Other users' versions are not visible.
    status, body = await call(client, "GET", "/room_keys/version/1", bob)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Update the auth data.
    status, body = await call(client, "PUT", "/room_keys/version/2", alice,
                              {"algorithm": ALG, "auth_data": {"public_key": "new"}, "version": "2"})
    assert (status, body) == (200, {})
    status, body = await call(client, "GET", "/room_keys/version/2", alice)
    assert body["auth_data"] == {"public_key": "new"}
    for request, code, errcode in (
        ({"algorithm": "other", "auth_data": {}}, 400, "M_INVALID_PARAM"),
        ({"algorithm": ALG, "auth_data": {"public_key": "pk"}, "version": "1"}, 400, "M_INVALID_PARAM"),
        ({"algorithm": ALG}, 400, "M_BAD_JSON"),
        ({"auth_data": {}}, 400, "M_BAD_JSON"),
    ):
        status, body = await call(client, "PUT", "/room_keys/version/2", alice, request)
        assert (status, body["errcode"]) == (code, errcode), request
    status, body = await call(client, "PUT", "/room_keys/version/7", alice,
                              {"algorithm": ALG, "auth_data": {"public_key": "pk"}})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Delete: the previous one becomes current; the number is not reused.
    assert await call(client, "DELETE", "/room_keys/version/2", alice) == (200, {})
    status, body = await call(client, "DELETE", "/room_keys/version/2", alice)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await call(client, "GET", "/room_keys/version", alice)
    assert body["version"] == "1"
    assert await _version(client, alice) == "3"
    for request in ({"algorithm": 5, "auth_data": {}}, {"algorithm": ALG, "auth_data": []}):
        status, body = await call(client, "POST", "/room_keys/version", alice, request)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await call(client, "POST", "/room_keys/version", alice, data=b"x", headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call(client, "GET", "/room_keys/version", None)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_keys_at_three_levels(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    version = await _version(client, alice)
    v = {"version": version}
    status, body = await call(client, "PUT", "/room_keys/keys", alice,
                              {"rooms": {ROOM: {"sessions": {"s1": key(data="a"), "s2": key(data="b")}}}}, params=v)
    assert (status, body) == (200, {"etag": "1", "count": 2})
    status, body = await call(client, "PUT", f"/room_keys/keys/{ROOM}", alice,
                              {"sessions": {"s3": key(data="c")}}, params=v)
    assert (status, body) == (200, {"etag": "2", "count": 3})
    status, body = await call(client, "PUT", "/room_keys/keys/!other:localhost/s4", alice, key(data="d"), params=v)
    assert (status, body) == (200, {"etag": "3", "count": 4})
    status, body = await call(client, "GET", "/room_keys/keys", alice, params=v)
    assert status == 200
    assert body == {"rooms": {
        ROOM: {"sessions": {"s1": key(data="a"), "s2": key(data="b"), "s3": key(data="c")}},
        "!other:localhost": {"sessions": {"s4": key(data="d")}},
    }}
    status, body = await call(client, "GET", f"/room_keys/keys/{ROOM}", alice, params=v)
    assert body == {"sessions": {"s1": key(data="a"), "s2": key(data="b"), "s3": key(data="c")}}
    assert await call(client, "GET", "/room_keys/keys/!none:localhost", alice, params=v) == (200, {"sessions": {}})
    assert await call(client, "GET", f"/room_keys/keys/{ROOM}/s2", alice, params=v) == (200, key(data="b"))
    status, body = await call(client, "GET", f"/room_keys/keys/{ROOM}/nope", alice, params=v)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await call(client, "GET", "/room_keys/version", alice)
    assert (body["count"], body["etag"]) == (4, "3")
    # Delete at each level.
    assert await call(client, "DELETE", f"/room_keys/keys/{ROOM}/s1", alice, params=v) == (200, {"etag": "4", "count": 3})
    assert await call(client, "DELETE", f"/room_keys/keys/{ROOM}", alice, params=v) == (200, {"etag": "5", "count": 1})
    assert await call(client, "DELETE", "/room_keys/keys", alice, params=v) == (200, {"etag": "6", "count": 0})
    assert await call(client, "DELETE", "/room_keys/keys", alice, params=v) == (200, {"etag": "6", "count": 0})
    assert await call(client, "GET", "/room_keys/keys", alice, params=v) == (200, {"rooms": {}})


async def test_replacement_rules_through_the_api(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    v = {"version": await _version(client, alice)}
    path = f"/room_keys/keys/{ROOM}/s"

    async def put(data: dict[str, Any]) -> dict[str, Any]:
        status, body = await call(client, "PUT", path, alice, data, params=v)
        assert status == 200
        result: dict[str, Any] = body
        return result

    async def stored() -> Any:
        return (await call(client, "GET", path, alice, params=v))[1]

    assert await put(key(5, 5, False, "first")) == {"etag": "1", "count": 1}
    # Worse: unverified and later index → kept as it was, etag unchanged.
    assert await put(key(6, 0, False, "worse")) == {"etag": "1", "count": 1}
    assert (await stored())["session_data"] == {"ciphertext": "first"}
    assert await put(key(5, 4, False, "fewer-forwards")) == {"etag": "2", "count": 1}
    assert await put(key(3, 9, False, "lower-index")) == {"etag": "3", "count": 1}
    assert await put(key(9, 9, True, "verified")) == {"etag": "4", "count": 1}
    # Unverified never replaces verified, even with a lower index.
    assert await put(key(0, 0, False, "unverified")) == {"etag": "4", "count": 1}
    assert await stored() == key(9, 9, True, "verified")


async def test_wrong_and_unknown_versions(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    status, body = await call(client, "PUT", f"/room_keys/keys/{ROOM}/s", alice, key(), params={"version": "1"})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    old = await _version(client, alice)
    current = await _version(client, alice)
    status, body = await call(client, "PUT", f"/room_keys/keys/{ROOM}/s", alice, key(), params={"version": old})
    assert (status, body) == (403, {"errcode": "M_WRONG_ROOM_KEYS_VERSION", "error": "Wrong backup version.",
                                    "current_version": current})
    status, body = await call(client, "PUT", "/room_keys/keys", alice, {"rooms": {}}, params={"version": "99"})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    for method in ("GET", "DELETE"):
        status, body = await call(client, method, "/room_keys/keys", alice, params={"version": "99"})
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await call(client, method, "/room_keys/keys", alice)
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await call(client, "PUT", "/room_keys/keys", alice, {"rooms": {}})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    # Reading an older version is allowed.
    assert await call(client, "GET", "/room_keys/keys", alice, params={"version": old}) == (200, {"rooms": {}})


async def test_bad_key_data_stores_nothing(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    v = {"version": await _version(client, alice)}
    good = key()
    for data in (
        {**good, "is_verified": "yes"},
        {**good, "first_message_index": -1},
        {**good, "forwarded_count": 1.5},
        {**good, "session_data": "text"},
        {k: val for k, val in good.items() if k != "first_message_index"},
        [],
    ):
        status, body = await call(client, "PUT", "/room_keys/keys", alice,
                                  {"rooms": {ROOM: {"sessions": {"ok": good, "bad": data}}}}, params=v)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), data
    for request in ({"rooms": []}, {"rooms": {ROOM: {"nosessions": {}}}}, {}):
        status, body = await call(client, "PUT", "/room_keys/keys", alice, request, params=v)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), request
    status, body = await call(client, "PUT", f"/room_keys/keys/{ROOM}", alice, {"sessions": []}, params=v)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    assert await call(client, "GET", "/room_keys/keys", alice, params=v) == (200, {"rooms": {}})


async def test_auth_data_of_the_curve25519_algorithm_is_checked(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    for auth_data, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"signatures": {}}, "M_MISSING_PARAM"),
        ({"public_key": 5}, "M_BAD_JSON"),
        ({"public_key": ""}, "M_BAD_JSON"),
        ({"public_key": "pk", "signatures": "x"}, "M_BAD_JSON"),
        ({"public_key": "pk", "signatures": {alice.user_id: []}}, "M_BAD_JSON"),
        ({"public_key": "pk", "signatures": {alice.user_id: {"ed25519:D": 5}}}, "M_BAD_JSON"),
    ):
        status, body = await call(client, "POST", "/room_keys/version", alice, {"algorithm": ALG, "auth_data": auth_data})
        assert (status, body["errcode"]) == (400, errcode), auth_data
    status, body = await call(client, "GET", "/room_keys/version", alice)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")  # nothing was created
    version = await _version(client, alice)
    status, body = await call(client, "PUT", f"/room_keys/version/{version}", alice,
                              {"algorithm": ALG, "auth_data": {"public_key": 1}})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    assert (await call(client, "GET", "/room_keys/version", alice))[1]["auth_data"] == {"public_key": "pk"}
    signed = {"public_key": "pk", "signatures": {alice.user_id: {"ed25519:D": "sig"}}}
    assert await call(client, "PUT", f"/room_keys/version/{version}", alice,
                      {"algorithm": ALG, "auth_data": signed}) == (200, {})
    # Other algorithms' auth_data is opaque.
    status, body = await call(client, "POST", "/room_keys/version", alice,
                              {"algorithm": "org.example.backup", "auth_data": {"anything": [1]}})
    assert (status, body) == (200, {"version": "2"})
