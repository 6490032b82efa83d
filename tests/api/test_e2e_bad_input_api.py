"""No end-to-end encryption endpoint answers 5xx to malformed input: every
field of a valid request body is replaced, in turn, by each JSON type, and
the answer must be a 2xx or a 4xx carrying an ``errcode`` (a 401 may instead
be a user-interactive auth challenge). Bodies that are not JSON objects and
odd path and query parameters are tried too."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from tests.api.accounts_support import AccountsClient
from tests.api.e2e_support import CrossSigning, call, new_user, password_auth, sign_with
from tests.api.rooms_support import create_room, q

WRONG_VALUES: list[Any] = [None, True, 0, -1, 1.5, 2**70, "", "x", [], ["x"], {}, {"a": 1}, [[1]]]
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def mutations(body: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, wrong value) for every position in ``body``."""
    if path:
        for value in WRONG_VALUES:
            yield path, value
    if isinstance(body, dict):
        for key, value in body.items():
            yield from mutations(value, (*path, key))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            yield from mutations(value, (*path, index))


def replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    new = copy.deepcopy(body)
    target = new
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return new


def acceptable(status: int, body: Any) -> bool:
    if status < 400:
        return True
    if status >= 500 or not isinstance(body, dict):
        return False
    return isinstance(body.get("errcode"), str) or (status == 401 and "flows" in body)


async def test_no_e2e_endpoint_fails_on_malformed_input(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    cross = CrossSigning(alice.user_id)
    key_data = {"first_message_index": 1, "forwarded_count": 0, "is_verified": False, "session_data": {"a": "b"}}
    device_keys = {**alice.device_keys(), "unsigned": {"device_display_name": "x"}}
    requests: list[tuple[str, str, Any]] = [
        ("POST", "/keys/upload", {
            "device_keys": device_keys,
            "one_time_keys": {"signed_curve25519:A": alice.signed_key("k")},
            "fallback_keys": {"signed_curve25519:F": alice.signed_key("f", fallback=True)},
        }),
        ("POST", "/keys/query", {"device_keys": {bob.user_id: ["X"]}, "timeout": 10}),
        ("POST", "/keys/claim", {"one_time_keys": {bob.user_id: {"X": "signed_curve25519"}}, "timeout": 10}),
        ("POST", "/keys/device_signing/upload", {**cross.upload_body(), "auth": password_auth(alice)}),
        ("POST", "/keys/signatures/upload", {
            alice.user_id: {alice.device_id: sign_with(alice.device_keys(), alice.user_id, cross.self_signing)},
        }),
        ("PUT", "/sendToDevice/m.test/txn{n}", {"messages": {bob.user_id: {"*": {"a": 1}}}}),
        ("PUT", f"/devices/{alice.device_id}", {"display_name": "x"}),
        ("POST", "/delete_devices", {"devices": ["NOPE"], "auth": password_auth(alice)}),
        ("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": {"public_key": "p", "signatures": {}}}),
        ("PUT", "/room_keys/version/1", {"algorithm": ALG, "auth_data": {"public_key": "p"}, "version": "1"}),
        ("PUT", "/room_keys/keys?version=1", {"rooms": {room: {"sessions": {"s": key_data}}}}),
        ("PUT", f"/room_keys/keys/{q(room)}?version=1", {"sessions": {"s": key_data}}),
        ("PUT", f"/room_keys/keys/{q(room)}/s?version=1", key_data),
    ]
    failures: list[str] = []
    count = 0
    for method, path, body in requests:
        for where, value in [((), None), *mutations(body)]:
            count += 1
            request = replaced(body, where, value) if where else body
            status, answer = await call(client, method, path.replace("{n}", str(count)), alice, request)
            if not acceptable(status, answer):
                failures.append(f"{method} {path} {where}={value!r}: {status} {answer}")
        for raw in (b"[]", b"1", b"null", b'"s"', b"{", b""):
            count += 1
            status, answer = await call(client, method, path.replace("{n}", str(count)), alice,
                                        data=raw, headers=alice.headers)
            if not acceptable(status, answer):
                failures.append(f"{method} {path} body {raw!r}: {status} {answer}")
        # Whatever was accepted must still be readable.
        status, answer = await call(client, "POST", "/keys/query", bob,
                                    {"device_keys": {alice.user_id: [], bob.user_id: []}})
        if status != 200:
            failures.append(f"/keys/query after {method} {path}: {status} {answer}")
    for version in ("abc", "-1", "1e3", "", "99999999999999999999999", "%00"):
        for method in ("GET", "DELETE"):
            for path in ("/room_keys/keys", f"/room_keys/keys/{q(room)}", f"/room_keys/keys/{q(room)}/s"):
                status, answer = await call(client, method, f"{path}?version={version}", alice)
                if not acceptable(status, answer):
                    failures.append(f"{method} {path}?version={version}: {status} {answer}")
        for method in ("GET", "DELETE", "PUT"):
            status, answer = await call(client, method, f"/room_keys/version/{version or '%20'}", alice,
                                        {} if method == "PUT" else None)
            if not acceptable(status, answer):
                failures.append(f"{method} /room_keys/version/{version}: {status} {answer}")
    for params in ({"from": "x", "to": "y"}, {"from": "0_0"}, {"from": "9" * 30 + "_0_0_0_0_0_0", "to": "s"}, {}):
        status, answer = await call(client, "GET", "/keys/changes", alice, params=params)
        if not acceptable(status, answer) or status != 400:
            failures.append(f"/keys/changes {params}: {status} {answer}")
    assert failures == []
