"""Push rules endpoints (pushrules.yaml) over the real HTTP stack, with real accounts."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ranvier.api.http import HOMESERVER
from ranvier.core.push_rules import build_ruleset
from tests.api.conftest import MakeClient

Client = TestClient[Any, Any]
BASE = "/_matrix/client/v3/pushrules"
ALICE = "@alice:localhost"


async def new_user(client: Client, localpart: str, *, guest: bool = False) -> dict[str, str]:
    """Register ``localpart`` through the accounts service; its Authorization header."""
    _, session = await client.app[HOMESERVER].accounts.register(localpart, None, is_guest=guest)
    assert session is not None
    return {"Authorization": f"Bearer {session.access_token}"}


@pytest.fixture
async def setup(make_client: MakeClient) -> tuple[Client, dict[str, str]]:
    client = await make_client()
    return client, await new_user(client, "alice")


async def call(
    client: Client,
    method: str,
    path: str,
    headers: dict[str, str] | None,
    body: Any = None,
    **params: str,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": headers or {}, "params": params}
    if isinstance(body, bytes):
        kwargs["data"] = body
    elif body is not None:
        kwargs["json"] = body
    response = await client.request(method, BASE + path, **kwargs)
    return response.status, await response.json()


def error(errcode: str) -> Any:
    class _Errcode:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, dict) and other.get("errcode") == errcode

        def __repr__(self) -> str:
            return f"<error {errcode}>"

    return _Errcode()


async def rule_ids(client: Client, headers: dict[str, str], kind: str) -> list[str]:
    status, body = await call(client, "GET", "/global/", headers)
    assert status == 200
    return [rule["rule_id"] for rule in body[kind]]


# --- reading --------------------------------------------------------------------------


async def test_get_all_rules_gives_the_defaults(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    expected = build_ruleset(ALICE, []).to_json()
    assert await call(client, "GET", "/", alice) == (200, {"global": expected})
    assert await call(client, "GET", "/global/", alice) == (200, expected)


ENDPOINTS = [
    ("GET", "/"),
    ("GET", "/global/"),
    ("GET", "/global/override/.m.rule.master"),
    ("PUT", "/global/override/x"),
    ("DELETE", "/global/override/x"),
    ("GET", "/global/override/.m.rule.master/enabled"),
    ("PUT", "/global/override/.m.rule.master/enabled"),
    ("GET", "/global/override/.m.rule.master/actions"),
    ("PUT", "/global/override/.m.rule.master/actions"),
]


async def test_every_endpoint_needs_a_valid_token(make_client: MakeClient) -> None:
    client = await make_client()
    for method, path in ENDPOINTS:
        body = {"actions": [], "enabled": True} if method == "PUT" else None
        assert await call(client, method, path, None, body) == (401, error("M_MISSING_TOKEN"))
        bad = {"Authorization": "Bearer nope"}
        assert await call(client, method, path, bad, body) == (401, error("M_UNKNOWN_TOKEN"))


async def test_guests_are_refused(make_client: MakeClient) -> None:
    client = await make_client()
    guest = await new_user(client, "guest1", guest=True)
    status, body = await call(client, "GET", "/", guest)
    assert (status, body["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")


MALFORMED_PATHS: list[tuple[str, str, int, str]] = [
    # (method, path after /pushrules, status, errcode)
    ("GET", "", 400, "M_UNRECOGNIZED"),  # no trailing slash
    ("GET", "/global", 400, "M_UNRECOGNIZED"),
    ("GET", "/device/", 400, "M_UNRECOGNIZED"),  # unknown scope
    ("GET", "/device/override/.m.rule.master", 400, "M_UNRECOGNIZED"),
    ("PUT", "/device/override/mine", 400, "M_UNRECOGNIZED"),
    ("GET", "/global/override", 400, "M_UNRECOGNIZED"),  # missing rule ID
    ("GET", "/global/override/", 400, "M_UNRECOGNIZED"),
    ("PUT", "/global/override/", 400, "M_UNRECOGNIZED"),
    ("DELETE", "/global/override/", 400, "M_UNRECOGNIZED"),
    ("GET", "/global//x", 400, "M_UNRECOGNIZED"),  # missing kind
    ("GET", "/global/bogus/", 400, "M_INVALID_PARAM"),  # unknown kind
    ("PUT", "/global/bogus", 400, "M_INVALID_PARAM"),
    ("GET", "/global/override/.m.rule.master/", 400, "M_UNRECOGNIZED"),  # trailing slash
    ("GET", "/global/override/.m.rule.master/enabled/", 400, "M_UNRECOGNIZED"),
    ("GET", "/global/override/.m.rule.master/bogus", 400, "M_UNRECOGNIZED"),  # unknown part
    ("PUT", "/global/override/.m.rule.master/bogus", 400, "M_UNRECOGNIZED"),
    ("PUT", "/global/", 405, "M_UNRECOGNIZED"),  # a spec path, a method it lacks
    ("DELETE", "/", 405, "M_UNRECOGNIZED"),
    ("POST", "/global/override/.m.rule.master", 405, "M_UNRECOGNIZED"),
    ("DELETE", "/global/override/.m.rule.master/enabled", 405, "M_UNRECOGNIZED"),
]


@pytest.mark.parametrize(("method", "path", "status", "errcode"), MALFORMED_PATHS)
async def test_malformed_paths_are_400(
    setup: tuple[Client, dict[str, str]], method: str, path: str, status: int, errcode: str
) -> None:
    client, alice = setup
    body = {"actions": []} if method == "PUT" else None
    answer_status, answer = await call(client, method, path, alice, body)
    assert (answer_status, answer["errcode"]) == (status, errcode)
    # Nothing was written: the user's rules are still the defaults.
    assert (await call(client, "GET", "/", alice))[1] == {
        "global": build_ruleset(ALICE, []).to_json()
    }


async def test_malformed_paths_need_a_token_first(setup: tuple[Client, dict[str, str]]) -> None:
    client, _ = setup
    status, body = await call(client, "GET", "/global/override", None)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_other_paths_stay_unrecognised(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    response = await client.get("/_matrix/client/v3/pushrulesx", headers=alice)
    assert (response.status, (await response.json())["errcode"]) == (404, "M_UNRECOGNIZED")


async def test_get_one_rule_and_its_parts(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    master = {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": False,
        "conditions": [],
        "actions": [],
    }
    assert await call(client, "GET", "/global/override/.m.rule.master", alice) == (200, master)
    assert await call(client, "GET", "/global/override/.m.rule.master/enabled", alice) == (
        200,
        {"enabled": False},
    )
    assert await call(client, "GET", "/global/underride/.m.rule.call/actions", alice) == (
        200,
        {"actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
    )


async def test_unknown_rule_is_404(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    for path, suffix in itertools.product(
        ("/global/override/nope", "/global/underride/.m.rule.master", "/global/room/x"),
        ("", "/enabled", "/actions"),
    ):
        assert await call(client, "GET", path + suffix, alice) == (
            404,
            {"errcode": "M_NOT_FOUND", "error": "The push rule was not found."},
        )


UNKNOWN_KIND_REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("PUT", "", {"actions": []}),
    ("DELETE", "", None),
    ("GET", "/enabled", None),
    ("PUT", "/enabled", {"enabled": True}),
    ("GET", "/actions", None),
    ("PUT", "/actions", {"actions": []}),
]


async def test_unknown_kind_is_400(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    for method, suffix, body in UNKNOWN_KIND_REQUESTS:
        status, answer = await call(client, method, "/global/bogus/rule" + suffix, alice, body)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), (method, suffix)


# --- creating, replacing, ordering ----------------------------------------------------


async def test_put_and_get_each_kind(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    beer = {
        "conditions": [
            {"kind": "event_match", "key": "content.body", "pattern": "beer"},
            {"kind": "room_member_count", "is": "<=10"},
        ],
        "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}],
    }
    assert await call(client, "PUT", "/global/override/beer", alice, beer) == (200, {})
    assert await call(client, "GET", "/global/override/beer", alice) == (
        200,
        {"rule_id": "beer", "default": False, "enabled": True, **beer},
    )
    cake = {"pattern": "cake*lie", "actions": ["notify"]}
    assert await call(client, "PUT", "/global/content/nocake", alice, cake) == (200, {})
    assert await call(client, "GET", "/global/content/nocake", alice) == (
        200,
        {"rule_id": "nocake", "default": False, "enabled": True, **cake},
    )
    # Room and sender rules: the rule ID is the room or user; IDs are URL-encoded.
    room = "!dj234r78wl45Gh4D:matrix.org"
    assert await call(
        client, "PUT", "/global/room/%21dj234r78wl45Gh4D%3Amatrix.org", alice, {"actions": []}
    ) == (200, {})
    assert await call(
        client, "PUT", "/global/sender/@spambot:matrix.org", alice, {"actions": []}
    ) == (200, {})
    status, full = await call(client, "GET", "/", alice)
    assert status == 200
    assert full["global"]["room"] == [
        {"rule_id": room, "default": False, "enabled": True, "actions": []}
    ]
    assert full["global"]["sender"] == [
        {"rule_id": "@spambot:matrix.org", "default": False, "enabled": True, "actions": []}
    ]
    # A user override rule sits after .m.rule.master and before the other defaults.
    assert full["global"]["override"][1]["rule_id"] == "beer"
    assert full["global"]["override"][2]["rule_id"] == ".m.rule.suppress_notices"


async def test_legacy_actions_are_stripped(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    body = {"conditions": [], "actions": ["dont_notify", "coalesce"]}
    assert await call(client, "PUT", "/global/underride/quiet", alice, body) == (200, {})
    assert await call(client, "GET", "/global/underride/quiet/actions", alice) == (
        200,
        {"actions": []},
    )


async def test_before_and_after(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup

    async def put(rule_id: str, **params: str) -> tuple[int, Any]:
        body = {"pattern": rule_id, "actions": ["notify"]}
        return await call(client, "PUT", f"/global/content/{rule_id}", alice, body, **params)

    assert await put("a") == (200, {})
    assert await put("b") == (200, {})  # new rules go first
    assert await rule_ids(client, alice, "content") == ["b", "a"]
    assert await put("c", after="b") == (200, {})
    assert await rule_ids(client, alice, "content") == ["b", "c", "a"]
    assert await put("d", before="b") == (200, {})
    assert await rule_ids(client, alice, "content") == ["d", "b", "c", "a"]
    assert await put("e", before="a", after="d") == (200, {})  # before wins
    assert await rule_ids(client, alice, "content") == ["d", "b", "c", "e", "a"]
    assert await put("d", after="a") == (200, {})  # an existing rule moves
    assert await rule_ids(client, alice, "content") == ["b", "c", "e", "a", "d"]
    assert await put("c") == (200, {})  # an update without a position keeps its place
    assert await rule_ids(client, alice, "content") == ["b", "c", "e", "a", "d"]


async def test_before_after_must_name_a_user_rule_of_the_kind(
    setup: tuple[Client, dict[str, str]],
) -> None:
    client, alice = setup
    assert await call(client, "PUT", "/global/underride/x", alice, {"actions": []}) == (200, {})
    # Missing, a server-default rule, a rule of another kind.
    for params in ({"before": "missing"}, {"after": ".m.rule.master"}, {"before": "x"}):
        status, body = await call(
            client, "PUT", "/global/override/new", alice, {"actions": []}, **params
        )
        anchor = next(iter(params.values()))
        # pushrules.yaml, setPushRule: 400 with this example error.
        assert (status, body) == (
            400,
            {"errcode": "M_UNKNOWN", "error": f"before/after rule not found: {anchor}"},
        )
    assert "new" not in await rule_ids(client, alice, "override")


async def test_relative_to_itself_is_400(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    assert await call(client, "PUT", "/global/override/x", alice, {"actions": []}) == (200, {})
    status, body = await call(
        client, "PUT", "/global/override/x", alice, {"actions": []}, after="x"
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_replacing_keeps_enabled_and_place(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    for rule_id in ("one", "two"):
        assert await call(client, "PUT", f"/global/override/{rule_id}", alice, {"actions": []}) == (
            200,
            {},
        )
    assert await call(client, "PUT", "/global/override/one/enabled", alice, {"enabled": False}) == (
        200,
        {},
    )
    new_body = {
        "actions": ["notify"],
        "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.*"}],
    }
    assert await call(client, "PUT", "/global/override/one", alice, new_body) == (200, {})
    assert await call(client, "GET", "/global/override/one", alice) == (
        200,
        {"rule_id": "one", "default": False, "enabled": False, **new_body},
    )
    assert (await rule_ids(client, alice, "override"))[1:3] == ["two", "one"]


BAD_PUTS = [
    ("/global/override/x", b"{not json", "M_NOT_JSON"),
    ("/global/override/x", b"[]", "M_BAD_JSON"),
    ("/global/override/x", {}, "M_BAD_JSON"),
    ("/global/override/x", {"actions": "notify"}, "M_BAD_JSON"),
    ("/global/override/x", {"actions": ["bogus"]}, "M_BAD_JSON"),
    ("/global/override/x", {"actions": [], "conditions": {}}, "M_BAD_JSON"),
    ("/global/override/x", {"actions": [], "conditions": [{"key": "type"}]}, "M_BAD_JSON"),
    (
        "/global/override/x",
        {"actions": [], "conditions": [{"kind": "event_match"}]},
        "M_BAD_JSON",
    ),
    (
        "/global/underride/x",
        {"actions": [], "conditions": [{"kind": "room_member_count", "is": "lots"}]},
        "M_BAD_JSON",
    ),
    ("/global/content/x", {"actions": []}, "M_BAD_JSON"),
    ("/global/content/x", {"actions": [], "pattern": 5}, "M_BAD_JSON"),
    ("/global/override/.m.rule.master", {"actions": []}, "M_INVALID_PARAM"),
    ("/global/override/.mine", {"actions": []}, "M_INVALID_PARAM"),
    ("/global/override/a%2Fb", {"actions": []}, "M_INVALID_PARAM"),
    ("/global/override/a%5Cb", {"actions": []}, "M_INVALID_PARAM"),
    ("/global/override/a%00b", {"actions": []}, "M_INVALID_PARAM"),
    ("/global/content/x", {"actions": [], "pattern": "a\u0000b"}, "M_BAD_JSON"),
]


async def test_put_rejects_bad_requests(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    for path, body, errcode in BAD_PUTS:
        status, answer = await call(client, "PUT", path, alice, body)
        assert (status, answer["errcode"]) == (400, errcode), (path, body)
    # Nothing was written.
    assert await call(client, "GET", "/", alice) == (
        200,
        {"global": build_ruleset(ALICE, []).to_json()},
    )


# --- deleting ------------------------------------------------------------------------


async def test_delete(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    assert await call(client, "PUT", "/global/sender/@bob:localhost", alice, {"actions": []}) == (
        200,
        {},
    )
    assert await call(client, "DELETE", "/global/sender/@bob:localhost", alice) == (200, {})
    assert await rule_ids(client, alice, "sender") == []
    assert await call(client, "DELETE", "/global/sender/@bob:localhost", alice) == (
        404,
        {"errcode": "M_NOT_FOUND", "error": "The push rule was not found."},
    )
    assert await call(client, "DELETE", "/global/override/.m.rule.nope", alice) == (
        404,
        error("M_NOT_FOUND"),
    )
    # NUL in any path parameter is 400 M_INVALID_PARAM (issue 9, api/http.py http_layer_middleware).
    for path in ("/global/room/a%00b", "/global/room/a%00b/enabled", "/global/room/a%00b/actions"):
        method = "DELETE" if "/" not in path.removeprefix("/global/room/") else "PUT"
        status, body = await call(client, method, path, alice, {"enabled": True, "actions": []})
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await call(client, "DELETE", "/global/override/.m.rule.master", alice)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert ".m.rule.master" in await rule_ids(client, alice, "override")


# --- enabled and actions -------------------------------------------------------------


async def test_enable_a_default_rule(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    path = "/global/override/.m.rule.master/enabled"
    assert await call(client, "PUT", path, alice, {"enabled": True}) == (200, {})
    assert await call(client, "GET", path, alice) == (200, {"enabled": True})
    status, body = await call(client, "GET", "/global/", alice)
    assert status == 200
    assert body["override"][0] == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": True,
        "conditions": [],
        "actions": [],
    }
    assert await call(client, "PUT", path, alice, {"enabled": False}) == (200, {})
    assert await call(client, "GET", path, alice) == (200, {"enabled": False})


async def test_enable_a_user_rule(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    assert await call(client, "PUT", "/global/room/!r:localhost", alice, {"actions": []}) == (
        200,
        {},
    )
    path = "/global/room/!r:localhost/enabled"
    assert await call(client, "GET", path, alice) == (200, {"enabled": True})
    assert await call(client, "PUT", path, alice, {"enabled": False}) == (200, {})
    assert await call(client, "GET", path, alice) == (200, {"enabled": False})


async def test_enabled_bad_body(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    path = "/global/override/.m.rule.master/enabled"
    for body, errcode in (
        (b"nope", "M_NOT_JSON"),
        ({}, "M_BAD_JSON"),
        ({"enabled": "true"}, "M_BAD_JSON"),
        ({"enabled": 1}, "M_BAD_JSON"),
    ):
        status, answer = await call(client, "PUT", path, alice, body)
        assert (status, answer["errcode"]) == (400, errcode), body
    assert await call(client, "GET", path, alice) == (200, {"enabled": False})


async def test_enabled_unknown_rule(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    for path in ("/global/override/nope/enabled", "/global/override/.m.rule.nope/enabled"):
        assert await call(client, "PUT", path, alice, {"enabled": True}) == (
            404,
            error("M_NOT_FOUND"),
        )


async def test_set_actions_of_default_and_user_rules(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    path = "/global/underride/.m.rule.message/actions"
    highlight = ["notify", {"set_tweak": "highlight"}]
    assert await call(client, "PUT", path, alice, {"actions": highlight}) == (200, {})
    assert await call(client, "GET", path, alice) == (200, {"actions": highlight})
    status, rule = await call(client, "GET", "/global/underride/.m.rule.message", alice)
    assert status == 200
    assert rule["default"] is True and rule["enabled"] is True and rule["actions"] == highlight

    assert await call(
        client, "PUT", "/global/content/c", alice, {"pattern": "c", "actions": []}
    ) == (200, {})
    assert await call(
        client, "PUT", "/global/content/c/actions", alice, {"actions": ["notify", "dont_notify"]}
    ) == (200, {})
    assert await call(client, "GET", "/global/content/c/actions", alice) == (
        200,
        {"actions": ["notify"]},
    )


BAD_ACTION_PUTS = [
    ("/global/override/.m.rule.master/actions", b"{", 400, "M_NOT_JSON"),
    ("/global/override/.m.rule.master/actions", {}, 400, "M_BAD_JSON"),
    ("/global/override/.m.rule.master/actions", {"actions": {}}, 400, "M_BAD_JSON"),
    ("/global/override/.m.rule.master/actions", {"actions": [7]}, 400, "M_BAD_JSON"),
    ("/global/override/nope/actions", {"actions": []}, 404, "M_NOT_FOUND"),
    ("/global/override/.m.rule.nope/actions", {"actions": []}, 404, "M_NOT_FOUND"),
]


async def test_actions_errors(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    for path, body, status, errcode in BAD_ACTION_PUTS:
        got_status, answer = await call(client, "PUT", path, alice, body)
        assert (got_status, answer["errcode"]) == (status, errcode), (path, body)
    assert await call(client, "GET", "/global/override/.m.rule.master/actions", alice) == (
        200,
        {"actions": []},
    )


# --- isolation and sync ----------------------------------------------------------------


async def test_users_have_their_own_rules(setup: tuple[Client, dict[str, str]]) -> None:
    client, alice = setup
    bob = await new_user(client, "bob")
    assert await call(client, "PUT", "/global/override/mine", alice, {"actions": []}) == (200, {})
    assert await call(
        client, "PUT", "/global/override/.m.rule.master/enabled", alice, {"enabled": True}
    ) == (200, {})
    assert await call(client, "GET", "/global/", bob) == (
        200,
        build_ruleset("@bob:localhost", []).to_json(),
    )


async def test_changes_become_m_push_rules_account_data(
    setup: tuple[Client, dict[str, str]],
) -> None:
    client, alice = setup
    hs = client.app[HOMESERVER]
    start_position = await hs.account_data.current_position()
    version = hs.notifier.version(ALICE)
    assert await call(client, "PUT", "/global/override/mine", alice, {"actions": []}) == (200, {})
    assert hs.notifier.version(ALICE) > version
    position = await hs.account_data.current_position()
    assert position > start_position
    changes = await hs.account_data.changes_for_user(ALICE, start_position, position)
    status, full = await call(client, "GET", "/", alice)
    assert changes.global_events == [{"type": "m.push_rules", "content": full}]
    assert await hs.push_rules.account_data_content(ALICE) == full

    # A failed request changes nothing, not even the stream.
    status, _ = await call(
        client, "PUT", "/global/override/x", alice, {"actions": []}, after="nope"
    )
    assert status == 400
    assert await hs.account_data.current_position() == position
