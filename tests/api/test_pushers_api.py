"""GET /pushers and POST /pushers/set (Client-Server API, "Push Notifications";
pusher.yaml) over the real HTTP stack, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import NOW_MS, MakeClient
from tests.api.rooms_support import ROOMS_CONFIG, Client, User, call, hs_of, login_again, make_user

URL = "https://push.example.org/_matrix/push/v1/notify"


def pusher_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "http",
        "app_id": "org.example.app.ios",
        "pushkey": "APNS-TOKEN-1",
        "app_display_name": "Example",
        "device_display_name": "Alice's phone",
        "profile_tag": "xyz",
        "lang": "en-US",
        "data": {"url": URL, "format": "event_id_only", "custom": {"k": 1}},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _ABSENT}


_ABSENT: Any = object()


def listed(body: dict[str, Any]) -> dict[str, Any]:
    """What GET /pushers shows for a pusher set with ``body``."""
    return {k: v for k, v in body.items() if k != "append"}


async def set_pusher(client: Client, user: User, body: Any) -> tuple[int, Any]:
    return await call(client, "POST", "/pushers/set", user, body)


async def pushers(client: Client, user: User) -> list[dict[str, Any]]:
    status, body = await call(client, "GET", "/pushers", user)
    assert status == 200, body
    result: list[dict[str, Any]] = body["pushers"]
    return result


@pytest.fixture
async def app(migrated_dsn: str, make_client: MakeClient) -> Client:
    return await make_client({**ROOMS_CONFIG, "database": migrated_dsn})


async def test_no_pushers_at_first(app: Client) -> None:
    alice = await make_user(app, "alice")
    assert await call(app, "GET", "/pushers", alice) == (200, {"pushers": []})


async def test_set_then_list_shows_every_field(app: Client) -> None:
    alice = await make_user(app, "alice")
    body = pusher_body()
    assert await set_pusher(app, alice, body) == (200, {})
    assert await pushers(app, alice) == [listed(body)]


async def test_profile_tag_is_optional(app: Client) -> None:
    alice = await make_user(app, "alice")
    body = pusher_body(profile_tag=_ABSENT)
    assert await set_pusher(app, alice, body) == (200, {})
    assert await pushers(app, alice) == [listed(body)]


async def test_setting_the_same_app_id_and_pushkey_updates_the_pusher(app: Client) -> None:
    alice = await make_user(app, "alice")
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    updated = pusher_body(lang="de", device_display_name="Phone 2", data={"url": URL})
    assert await set_pusher(app, alice, updated) == (200, {})
    assert await pushers(app, alice) == [listed(updated)]


async def test_pushers_differ_by_pushkey_and_by_app_id(app: Client) -> None:
    alice = await make_user(app, "alice")
    bodies = [
        pusher_body(),
        pusher_body(pushkey="APNS-TOKEN-2"),
        pusher_body(app_id="org.example.app.android"),
    ]
    for body in bodies:
        assert (await set_pusher(app, alice, body))[0] == 200
    assert await pushers(app, alice) == [listed(b) for b in bodies]


async def test_each_user_sees_only_their_own_pushers(app: Client) -> None:
    alice = await make_user(app, "alice")
    bob = await make_user(app, "bob")
    assert (await set_pusher(app, alice, pusher_body(pushkey="alice-key")))[0] == 200
    assert await pushers(app, bob) == []


async def test_without_append_the_pushkey_is_taken_from_other_users(app: Client) -> None:
    """ "Otherwise, the homeserver must remove any other pushers with the same
    App ID and pushkey for different users." (append defaults to false)"""
    alice = await make_user(app, "alice")
    bob = await make_user(app, "bob")
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    assert (await set_pusher(app, bob, pusher_body()))[0] == 200
    assert await pushers(app, alice) == []
    assert await pushers(app, bob) == [listed(pusher_body())]


async def test_who_has_a_pusher_follows_every_write(app: Client) -> None:
    """Push evaluation hands notifications over only for users with a pusher
    (``users_with_pushers``): the set follows sets, deletions and pushkeys
    taken by another user, whether it was loaded before them or after."""
    service = hs_of(app).pushers
    alice = await make_user(app, "alice")
    bob = await make_user(app, "bob")
    everyone = {alice.user_id, bob.user_id, "@carol:localhost"}
    assert await service.users_with_pushers(everyone) == set()  # loaded now
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    assert await service.users_with_pushers(everyone) == {alice.user_id}
    assert (await set_pusher(app, bob, pusher_body()))[0] == 200  # takes Alice's pushkey
    assert await service.users_with_pushers(everyone) == {bob.user_id}
    delete = {"kind": None, "app_id": "org.example.app.ios", "pushkey": "APNS-TOKEN-1"}
    assert await set_pusher(app, bob, delete) == (200, {})
    assert await service.users_with_pushers(everyone) == set()
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    service._with_pushers = None  # as after a restart: loaded from the database
    assert await service.users_with_pushers(everyone) == {alice.user_id}


async def test_with_append_other_users_keep_the_same_pushkey(app: Client) -> None:
    alice = await make_user(app, "alice")
    bob = await make_user(app, "bob")
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    assert (await set_pusher(app, bob, pusher_body(append=True)))[0] == 200
    assert await pushers(app, alice) == [listed(pusher_body())]
    assert await pushers(app, bob) == [listed(pusher_body())]


async def test_kind_null_deletes_the_pusher(app: Client) -> None:
    alice = await make_user(app, "alice")
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    assert (await set_pusher(app, alice, pusher_body(pushkey="other")))[0] == 200
    delete = {"kind": None, "app_id": "org.example.app.ios", "pushkey": "APNS-TOKEN-1"}
    assert await set_pusher(app, alice, delete) == (200, {})
    assert await pushers(app, alice) == [listed(pusher_body(pushkey="other"))]
    # Deleting a pusher that does not exist is not an error.
    assert await set_pusher(app, alice, delete) == (200, {})


async def test_deleting_does_not_touch_other_users(app: Client) -> None:
    alice = await make_user(app, "alice")
    bob = await make_user(app, "bob")
    assert (await set_pusher(app, alice, pusher_body(append=True)))[0] == 200
    assert (await set_pusher(app, bob, pusher_body(append=True)))[0] == 200
    delete = {"kind": None, "app_id": "org.example.app.ios", "pushkey": "APNS-TOKEN-1"}
    assert (await set_pusher(app, bob, delete))[0] == 200
    assert await pushers(app, alice) == [listed(pusher_body())]
    assert await pushers(app, bob) == []


async def test_pushkey_ts_is_when_the_pusher_was_set(app: Client) -> None:
    alice = await make_user(app, "alice")
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    [stored] = await hs_of(app).pushers.store.user_pushers(alice.user_id)
    assert stored.pushkey_ts == NOW_MS
    assert stored.device_id == alice.device_id


# --- pushers go with the device that set them -------------------------------------------


async def test_logout_deletes_the_pushers_its_device_set(app: Client) -> None:
    alice = await make_user(app, "alice")
    phone = await login_again(app, alice, "PHONE")
    assert (await set_pusher(app, alice, pusher_body(pushkey="laptop")))[0] == 200
    assert (await set_pusher(app, phone, pusher_body(pushkey="phone")))[0] == 200
    assert await call(app, "POST", "/logout", phone, {}) == (200, {})
    assert await pushers(app, alice) == [listed(pusher_body(pushkey="laptop"))]


async def test_logout_all_deletes_every_pusher(app: Client) -> None:
    alice = await make_user(app, "alice")
    phone = await login_again(app, alice, "PHONE")
    assert (await set_pusher(app, alice, pusher_body(pushkey="laptop")))[0] == 200
    assert (await set_pusher(app, phone, pusher_body(pushkey="phone")))[0] == 200
    assert await call(app, "POST", "/logout/all", phone, {}) == (200, {})
    after = await login_again(app, alice, "NEW")
    assert await pushers(app, after) == []


async def test_deleting_a_device_deletes_its_pushers(app: Client) -> None:
    alice = await make_user(app, "alice")
    phone = await login_again(app, alice, "PHONE")
    assert (await set_pusher(app, alice, pusher_body(pushkey="laptop")))[0] == 200
    assert (await set_pusher(app, phone, pusher_body(pushkey="phone")))[0] == 200
    await hs_of(app).devices.delete_devices(alice.user_id, ["PHONE"])
    assert await pushers(app, alice) == [listed(pusher_body(pushkey="laptop"))]


async def test_a_pusher_set_again_from_another_device_moves_to_it(app: Client) -> None:
    alice = await make_user(app, "alice")
    phone = await login_again(app, alice, "PHONE")
    assert (await set_pusher(app, phone, pusher_body()))[0] == 200
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    assert await call(app, "POST", "/logout", phone, {}) == (200, {})
    assert await pushers(app, alice) == [listed(pusher_body())]


# --- bad input ------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("no kind", pusher_body(kind=_ABSENT), "M_MISSING_PARAM"),
    ("no app_id", pusher_body(app_id=_ABSENT), "M_MISSING_PARAM"),
    ("no pushkey", pusher_body(pushkey=_ABSENT), "M_MISSING_PARAM"),
    ("no lang", pusher_body(lang=_ABSENT), "M_MISSING_PARAM"),
    ("no data", pusher_body(data=_ABSENT), "M_MISSING_PARAM"),
    ("no app_display_name", pusher_body(app_display_name=_ABSENT), "M_MISSING_PARAM"),
    ("no device_display_name", pusher_body(device_display_name=_ABSENT), "M_MISSING_PARAM"),
    ("no data.url", pusher_body(data={"format": "event_id_only"}), "M_MISSING_PARAM"),
    ("unknown kind", pusher_body(kind="carrier-pigeon"), "M_INVALID_PARAM"),
    ("email kind", pusher_body(kind="email", app_id="m.email"), "M_INVALID_PARAM"),
    ("kind not a string", pusher_body(kind=5), "M_INVALID_PARAM"),
    ("http url", pusher_body(data={"url": URL.replace("https", "http")}), "M_INVALID_PARAM"),
    ("wrong path", pusher_body(data={"url": "https://push.example.org/notify"}), "M_INVALID_PARAM"),
    ("not a url", pusher_body(data={"url": "push gateway"}), "M_INVALID_PARAM"),
    ("ftp url", pusher_body(data={"url": "ftp://h/_matrix/push/v1/notify"}), "M_INVALID_PARAM"),
    (
        "bad port",
        pusher_body(data={"url": "https://h:99999/_matrix/push/v1/notify"}),
        "M_INVALID_PARAM",
    ),
    (
        "credentials",
        pusher_body(data={"url": "https://u:p@h/_matrix/push/v1/notify"}),
        "M_INVALID_PARAM",
    ),
    ("url not a string", pusher_body(data={"url": ["https://h"]}), "M_INVALID_PARAM"),
    ("data not an object", pusher_body(data="https://h/_matrix/push/v1/notify"), "M_INVALID_PARAM"),
    ("format not a string", pusher_body(data={"url": URL, "format": 1}), "M_INVALID_PARAM"),
    ("append not a bool", pusher_body(append="yes"), "M_INVALID_PARAM"),
    ("lang not a string", pusher_body(lang=1), "M_INVALID_PARAM"),
    ("app_id not a string", pusher_body(app_id=["a"]), "M_INVALID_PARAM"),
    ("profile_tag not a string", pusher_body(profile_tag={}), "M_INVALID_PARAM"),
    ("empty pushkey", pusher_body(pushkey=""), "M_INVALID_PARAM"),
    ("pushkey over 512 bytes", pusher_body(pushkey="é" * 257), "M_INVALID_PARAM"),
    ("app_id over 64 chars", pusher_body(app_id="a" * 65), "M_INVALID_PARAM"),
    ("delete without pushkey", {"kind": None, "app_id": "a"}, "M_MISSING_PARAM"),
    (
        "delete, pushkey not a string",
        {"kind": None, "app_id": "a", "pushkey": 1},
        "M_INVALID_PARAM",
    ),
]


@pytest.mark.parametrize(
    ("body", "errcode"), [(b, e) for _, b, e in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES]
)
async def test_bad_bodies_get_400_and_write_nothing(
    app: Client, body: dict[str, Any], errcode: str
) -> None:
    alice = await make_user(app, "alice")
    status, answer = await set_pusher(app, alice, body)
    assert (status, answer["errcode"]) == (400, errcode), answer
    assert await pushers(app, alice) == []


async def test_missing_params_are_all_named(app: Client) -> None:
    alice = await make_user(app, "alice")
    body = pusher_body(lang=_ABSENT, data=_ABSENT)
    assert await set_pusher(app, alice, body) == (
        400,
        {"errcode": "M_MISSING_PARAM", "error": "Missing parameters: lang, data"},
    )


async def test_a_bad_update_keeps_the_existing_pusher(app: Client) -> None:
    alice = await make_user(app, "alice")
    assert (await set_pusher(app, alice, pusher_body()))[0] == 200
    bad = pusher_body(data={"url": "https://push.example.org/elsewhere"})
    assert (await set_pusher(app, alice, bad))[0] == 400
    assert await pushers(app, alice) == [listed(pusher_body())]


@pytest.mark.parametrize(
    ("raw", "errcode"), [(b"{not json", "M_NOT_JSON"), (b"[1, 2]", "M_BAD_JSON")]
)
async def test_a_body_that_is_no_json_object(app: Client, raw: bytes, errcode: str) -> None:
    alice = await make_user(app, "alice")
    response = await app.post("/_matrix/client/v3/pushers/set", data=raw, headers=alice.headers)
    assert response.status == 400
    assert (await response.json())["errcode"] == errcode


@pytest.mark.parametrize(("method", "path"), [("GET", "/pushers"), ("POST", "/pushers/set")])
async def test_both_endpoints_need_an_access_token(app: Client, method: str, path: str) -> None:
    status, body = await call(app, method, path, None, pusher_body())
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_http_urls_are_accepted_when_the_config_allows_them(
    make_client: MakeClient, migrated_dsn: str
) -> None:
    app = await make_client(
        {**ROOMS_CONFIG, "database": migrated_dsn, "push": {"allow_http_gateways": True}}
    )
    alice = await make_user(app, "alice")
    body = pusher_body(data={"url": "http://127.0.0.1:5000/_matrix/push/v1/notify"})
    assert await set_pusher(app, alice, body) == (200, {})
    assert await pushers(app, alice) == [listed(body)]
    # The path is still the spec's.
    bad = pusher_body(data={"url": "http://127.0.0.1:5000/notify"})
    assert (await set_pusher(app, alice, bad))[0] == 400
