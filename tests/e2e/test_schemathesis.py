"""Schemathesis over every Client-Server endpoint Ranvier serves, on both engines.

The operations come from the bundled OpenAPI (``../shared/matrix-spec/openapi/
client-server.json``), restricted to those ``docs/features.md`` marks done.
Each is called with generated inputs, logged in as a real user, against a real
``ranvier serve`` on SQLite and on PostgreSQL. No response may be a server
error (5xx), and every 4xx must be the spec's error body: JSON with an
``errcode`` (Client-Server API, "Standard error response").

Two tests per operation:

- ``test_no_server_errors``: the cases schemathesis draws from the schema.
- ``test_no_server_errors_on_hostile_input``: the same cases with one hostile
  change an attacker would try: JSON nested 100-1,100 levels deep inside the
  body, or a NUL character (U+0000) in a string of the body, in a path
  parameter or in a query parameter. PostgreSQL rejects NUL in ``text`` and
  ``jsonb``; orjson refuses to encode past 254 levels: both must end as a
  4xx, never a 500. Each test has a user and a room of its own; cases with a
  hostile body (and half the others) name them in their path, so that the
  change reaches the writes behind the checks of identifiers; a write that
  was accepted must leave the user's ``GET /sync`` working.

Bounded and deterministic: a fixed number of examples per operation,
derandomised.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from schemathesis import openapi

from tests.e2e.harness import Server, free_port, init_config, postgres_database
from tests.vectors import REPO_ROOT, vectors_dir

# No coverage while the cases run: this process only generates requests (hypothesis and
# schemathesis, a third more CPU under the tracer) and runs no Ranvier code; the server
# under test is a `ranvier serve` subprocess, which coverage does not measure anyway.
pytestmark = [pytest.mark.e2e, pytest.mark.no_cover]

# Beside the oracle vectors (``../shared/``, or wherever RANVIER_TEST_VECTORS points), so a
# worktree outside the repository's usual parent folder finds the spec too.
SPEC = vectors_dir().parent / "matrix-spec" / "openapi" / "client-server.json"
FEATURES = REPO_ROOT / "docs" / "features.md"
ENGINES = ("sqlite", "postgresql")
EXAMPLES_PER_OPERATION = 25
HOSTILE_EXAMPLES_PER_OPERATION = 20
# Endpoints whose generated calls would end the session the others run in.
SESSION_ENDING = {
    ("POST", "/_matrix/client/v3/logout"),
    ("POST", "/_matrix/client/v3/logout/all"),
    ("POST", "/_matrix/client/v3/account/deactivate"),
    ("POST", "/_matrix/client/v3/account/password"),
}
# Long-polls: an absent or generated ``timeout`` would hold each call for up to minutes
# (GET /events waits 30 s by default); these calls look for errors, so they ask not to wait.
LONG_POLLS = {("GET", "/_matrix/client/v3/events"), ("GET", "/_matrix/client/v3/events ")}
FUZZ_USER = "fuzz"
SERVER_NAME = "localhost"
# Well-formed values of path parameters (Appendices, "Identifier Grammar"), so that a hostile
# body or a NUL gets past the syntax checks and reaches the lookups and writes behind them.
# ``userId``, ``roomId`` and ``roomIdOrAlias`` name the test's own user and room.
WELL_FORMED_PATH_VALUES = {
    "roomAlias": f"#fuzz:{SERVER_NAME}",
    "eventId": "$fuzzevent",
    "eventType": "m.room.message",
    "type": "m.fuzz",
    "stateKey": "",
}
# JSON nesting an attacker sends: "a" objects, arrays, or both alternating (two levels a step).
NESTING_SHAPES = {
    "objects": ('{"a":', "}", 1),
    "arrays": ("[", "]", 1),
    "mixed": ('{"a":[', "]}", 2),
}
MIN_DEPTH, MAX_DEPTH = 100, 1100
# Depths at the limits of JSON libraries: orjson encodes up to 254 levels and decodes up to 1,024.
BOUNDARY_DEPTHS = (254, 255, 256, 512, 1024, 1025)
NESTED_PLACEHOLDER = "\ue000nested here\ue000"
BODY_CHANGES = ("deep nesting in the body", "NUL in the body")


def _done_operations() -> set[tuple[str, str]]:
    row = re.compile(r"^\| (GET|PUT|POST|DELETE) \| `([^`]+)` \| [^|]+ \| \*\*done\*\* \|$")
    done: set[tuple[str, str]] = set()
    for line in FEATURES.read_text(encoding="utf-8").splitlines():
        if match := row.match(line):
            done.add((match.group(1), match.group(2)))
    return done


@asynccontextmanager
async def _database_env(engine: str) -> AsyncIterator[dict[str, str]]:
    """RANVIER_* settings for a fresh database of ``engine``."""
    if engine == "sqlite":
        yield {}  # `ranvier init` configures a SQLite file beside the config
        return
    async with postgres_database() as dsn:
        yield {"RANVIER_DATABASE": dsn}


@dataclass(frozen=True)
class FuzzAccount:
    """A user of the server under test, every request is sent as."""

    base_url: str
    user_id: str
    access_token: str

    def authorization(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def headers(self, case: schemathesis.Case) -> dict[str, str]:
        return dict(case.headers or {}) | self.authorization()

    def own_path_values(self, room_id: str) -> dict[str, str]:
        """Path parameter values naming this user's own resources."""
        own = {"userId": self.user_id, "roomId": room_id, "roomIdOrAlias": room_id}
        return WELL_FORMED_PATH_VALUES | own


def _register(base_url: str, username: str) -> FuzzAccount:
    response = requests.post(
        f"{base_url}/_matrix/client/v3/register",
        json={
            "username": username,
            "password": "fuzz-password-1",
            "auth": {"type": "m.login.dummy"},
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    registered: dict[str, Any] = response.json()
    assert registered["user_id"] == f"@{username}:{SERVER_NAME}", registered
    return FuzzAccount(base_url, registered["user_id"], registered["access_token"])


@pytest.fixture(scope="module", params=ENGINES)
def server_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A ``ranvier serve`` on a fresh database of each engine, for the whole module."""
    engine: str = request.param
    folder: Path = tmp_path_factory.mktemp(f"schemathesis-{engine}")
    config = init_config(folder)
    # One loop for the module: the PostgreSQL database is made and dropped on the same one.
    loop = asyncio.new_event_loop()
    database = _database_env(engine)
    try:
        env = loop.run_until_complete(database.__aenter__())
        server = Server(
            config,
            free_port(),
            RANVIER_REGISTRATION_ENABLED="true",
            RANVIER_RATELIMIT_ENABLED="false",
            # Argon2's cheapest parameters: each hostile test registers a user, and the
            # fuzzed logins verify passwords; what is checked is the answers, not the hashing.
            RANVIER_PASSWORD_HASHING_TIME_COST="1",
            RANVIER_PASSWORD_HASHING_MEMORY_COST="32",
            **env,
        )
        try:
            loop.run_until_complete(_wait_ready(server))
            yield server.base_url
        finally:
            server.kill()
        assert "Traceback" not in server.log(), server.log()
    finally:
        loop.run_until_complete(database.__aexit__(None, None, None))
        loop.close()


async def _wait_ready(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)


@pytest.fixture(scope="module")
def account(server_url: str) -> FuzzAccount:
    """The user the schema's cases are sent as."""
    return _register(server_url, FUZZ_USER)


@pytest.fixture
def hostile_account(server_url: str) -> FuzzAccount:
    """A new user for each hostile test: what one stored (a poisoned account data or
    event) must not fail the /sync of the tests after it."""
    return _register(server_url, f"{FUZZ_USER}-{next(_hostile_users)}")


_hostile_users = itertools.count(1)


@pytest.fixture
def own_room(hostile_account: FuzzAccount) -> str:
    """A new room of the hostile test's user (and so one for each test)."""
    response = requests.post(
        f"{hostile_account.base_url}/_matrix/client/v3/createRoom",
        json={},
        headers=hostile_account.authorization(),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    room_id: str = response.json()["room_id"]
    return room_id


def _operations() -> list[Any]:
    schema = openapi.from_path(str(SPEC))
    done = _done_operations()
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in done and key not in SESSION_ENDING:
            operations.append(operation)
    return operations


def _accepts_json_body(operation: Any) -> bool:
    return any(body.media_type == "application/json" for body in operation.body)


def _hostile_changes(operation: Any) -> list[str]:
    """The hostile changes that apply to ``operation``'s requests."""
    changes = []
    if _accepts_json_body(operation):
        changes += list(BODY_CHANGES)
    if len(operation.path_parameters):
        changes.append("NUL in a path parameter")
    if len(operation.query):
        changes.append("NUL in a query parameter")
    return changes


OPERATIONS = _operations()
HOSTILE_OPERATIONS = [operation for operation in OPERATIONS if _hostile_changes(operation)]


def _label(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


@dataclass(frozen=True)
class Hostile:
    """One hostile change made to a generated case."""

    description: str
    body: bytes | None = None  # the request body that replaces the generated one


def _with_nul(data: st.DataObject, text: str, label: str) -> str:
    position = data.draw(st.integers(0, len(text)), label=f"{label}: NUL position")
    return f"{text[:position]}\x00{text[position:]}"


def _body_copy(case: schemathesis.Case) -> Any:
    """A copy of the generated JSON body to change (an empty object when there is none)."""
    body = case.body
    return copy.deepcopy(body) if isinstance(body, dict | list) else {}


def _containers(value: Any) -> Iterator[dict[str, Any] | list[Any]]:
    """Every object and array in a JSON value, outermost first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _containers(item)
    elif isinstance(value, list):
        yield value
        for item in value:
            yield from _containers(item)


def _deep_body(case: schemathesis.Case, data: st.DataObject) -> Hostile:
    """The body with JSON nested 100-1,100 levels at one place: a new or replaced member
    of any object in it, or a new item of any array."""
    body = _body_copy(case)
    container = data.draw(st.sampled_from(list(_containers(body))), label="container")
    if isinstance(container, dict):
        key = data.draw(st.sampled_from([*container, "hostile"]), label="member")
        container[key] = NESTED_PLACEHOLDER
    else:
        container.append(NESTED_PLACEHOLDER)
    shape = data.draw(st.sampled_from(sorted(NESTING_SHAPES)), label="shape")
    depths = st.sampled_from(BOUNDARY_DEPTHS) | st.integers(MIN_DEPTH, MAX_DEPTH)
    depth = data.draw(depths, label="depth")
    opening, closing, levels = NESTING_SHAPES[shape]
    steps = depth // levels
    nested = f"{opening * steps}0{closing * steps}"
    # Serialised as text: the client's own JSON encoder would refuse such depths.
    text = json.dumps(body)
    marker = json.dumps(NESTED_PLACEHOLDER)
    assert text.count(marker) == 1
    return Hostile(
        f"body nested {steps * levels} levels deep ({shape})",
        text.replace(marker, nested).encode(),
    )


def _nul_body(case: schemathesis.Case, data: st.DataObject) -> Hostile:
    """The body with a NUL in one string: a value, a member name, or a new member."""
    body = _body_copy(case)
    slots: list[tuple[dict[str, Any] | list[Any], Any, str]] = []
    for container in _containers(body):
        indexes = container if isinstance(container, dict) else range(len(container))
        for index in indexes:
            if isinstance(container[index], str):
                slots.append((container, index, "value"))
            if isinstance(container, dict):
                slots.append((container, index, "member name"))
        if isinstance(container, dict):
            slots.append((container, "hostile", "new member"))
    container, index, where = data.draw(st.sampled_from(slots), label="string")
    if where == "member name":
        assert isinstance(container, dict)
        container[_with_nul(data, index, where)] = container.pop(index)
    elif where == "new member":
        container[index] = _with_nul(data, "value", where)
    else:
        container[index] = _with_nul(data, container[index], where)
    return Hostile(f"NUL in a {where} of the body", json.dumps(body).encode())


def _nul_path(case: schemathesis.Case, data: st.DataObject) -> Hostile:
    name = data.draw(st.sampled_from(sorted(case.path_parameters)), label="path parameter")
    value = _with_nul(data, urllib.parse.unquote(str(case.path_parameters[name])), name)
    case.path_parameters[name] = urllib.parse.quote(value, safe="")
    return Hostile(f"NUL in path parameter {name}: {value!r}")


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return ""


def _nul_query(case: schemathesis.Case, data: st.DataObject) -> Hostile:
    names = sorted(parameter.name for parameter in case.operation.query)
    name = data.draw(st.sampled_from(names), label="query parameter")
    value = _with_nul(data, _query_text((case.query or {}).get(name)), name)
    case.query = {**(case.query or {}), name: value}
    return Hostile(f"NUL in query parameter {name}: {value!r}")


HOSTILE_CHANGES = {
    "deep nesting in the body": _deep_body,
    "NUL in the body": _nul_body,
    "NUL in a path parameter": _nul_path,
    "NUL in a query parameter": _nul_query,
}


def _aim_at_own_resources(case: schemathesis.Case, own: dict[str, str]) -> None:
    """Path parameters naming the user, its room, well-formed event IDs and types:
    the request then reaches the reads and writes behind the checks of identifiers."""
    for name in case.path_parameters:
        if name in own:
            case.path_parameters[name] = urllib.parse.quote(own[name], safe="")


def _make_hostile(case: schemathesis.Case, own: dict[str, str], data: st.DataObject) -> Hostile:
    change = data.draw(st.sampled_from(_hostile_changes(case.operation)), label="change")
    # A hostile body matters once it gets past the path: always aim those at real resources.
    in_body = change in BODY_CHANGES
    if in_body or data.draw(st.booleans(), label="aim at the fuzz user's own resources"):
        _aim_at_own_resources(case, own)
    hostile = HOSTILE_CHANGES[change](case, data)
    note(hostile.description)
    return hostile


def _assert_client_error_at_most(
    case: schemathesis.Case, response: Any, hostile: Hostile | None = None
) -> None:
    """No 5xx; a 4xx is JSON with an errcode (Client-Server API, "Standard error response")."""
    sent = f" with {hostile.description}" if hostile else ""
    described = (
        f"{case.method} {case.formatted_path}{sent} → {response.status_code}: {response.text[:500]}"
    )
    assert response.status_code < 500, described
    if response.status_code >= 400:
        # schemathesis' Response: header names in lower case, each with a list of values.
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), described
        error = response.json()
        assert isinstance(error, dict), described
        # User-Interactive Authentication ("User-interactive authentication API"): a 401
        # that lists the flows to complete has an errcode only once a stage failed.
        asks_for_auth = response.status_code == 401 and isinstance(error.get("flows"), list)
        assert asks_for_auth or isinstance(error.get("errcode"), str), described


def _settings(examples: int, *, shrink: bool = True) -> Any:
    # Without shrinking, a failure is reported as found: a hostile change is its own minimal
    # explanation, and shrinking one repeats hundreds of requests.
    phases = list(Phase) if shrink else [p for p in Phase if p is not Phase.shrink]
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )


def _assert_sync_still_works(account: FuzzAccount, hostile: Hostile) -> None:
    """What a hostile write stored must not break what reads it back for every client."""
    response = requests.get(
        f"{account.base_url}/_matrix/client/v3/sync",
        params={"timeout": "0"},
        headers=account.authorization(),
        timeout=30,
    )
    assert response.status_code == 200, (
        f"GET /sync after a write with {hostile.description} → {response.status_code}: "
        f"{response.text[:500]}"
    )


def test_some_operations_are_fuzzed() -> None:
    assert len(OPERATIONS) >= 3
    changes = {change for operation in OPERATIONS for change in _hostile_changes(operation)}
    assert changes == set(HOSTILE_CHANGES)


def _without_waiting(case: schemathesis.Case) -> None:
    """A long-poll's ``timeout`` set to 0 (see :data:`LONG_POLLS`)."""
    if (case.method.upper(), case.operation.path) in LONG_POLLS:
        case.query = {**(case.query or {}), "timeout": 0}


@pytest.mark.parametrize("operation", OPERATIONS, ids=[_label(op) for op in OPERATIONS])
def test_no_server_errors(account: FuzzAccount, operation: Any) -> None:
    @given(case=operation.as_strategy())
    @_settings(EXAMPLES_PER_OPERATION)
    def check(case: schemathesis.Case) -> None:
        _without_waiting(case)
        headers = account.headers(case)
        response = case.call(base_url=account.base_url, headers=headers, timeout=30)
        _assert_client_error_at_most(case, response)

    check()


@pytest.mark.parametrize(
    "operation", HOSTILE_OPERATIONS, ids=[_label(op) for op in HOSTILE_OPERATIONS]
)
def test_no_server_errors_on_hostile_input(
    hostile_account: FuzzAccount, own_room: str, operation: Any
) -> None:
    account = hostile_account
    own = account.own_path_values(own_room)

    @given(case=operation.as_strategy(), data=st.data())
    @_settings(HOSTILE_EXAMPLES_PER_OPERATION, shrink=False)
    def check(case: schemathesis.Case, data: st.DataObject) -> None:
        _without_waiting(case)
        hostile = _make_hostile(case, own, data)
        headers = account.headers(case)
        body: dict[str, Any] = {}
        if hostile.body is not None:
            headers["Content-Type"] = "application/json"
            body["data"] = hostile.body
        response = case.call(base_url=account.base_url, headers=headers, timeout=30, **body)
        _assert_client_error_at_most(case, response, hostile)
        if case.method != "GET" and 200 <= response.status_code < 300:
            _assert_sync_still_works(account, hostile)

    check()
