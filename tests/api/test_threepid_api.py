"""/account/3pid on a server that binds no third-party identifiers
(``m.3pid_changes`` disabled): an empty list, changes refused, requestToken
``M_THREEPID_MEDIUM_NOT_SUPPORTED``, unbind ``no-support``."""

from __future__ import annotations

import pytest

from tests.api.conftest import MakeClient
from tests.api.rooms_support import ROOMS_CONFIG, call, make_user


async def test_list_is_empty_and_needs_a_token(make_client: MakeClient) -> None:
    client = await make_client(ROOMS_CONFIG)
    alice = await make_user(client, "alice")
    assert await call(client, "GET", "/account/3pid", alice) == (200, {"threepids": []})
    status, body = await call(client, "GET", "/account/3pid")
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


@pytest.mark.parametrize("path", ["/account/3pid", "/account/3pid/add", "/account/3pid/delete"])
async def test_changes_are_refused(make_client: MakeClient, path: str) -> None:
    client = await make_client(ROOMS_CONFIG)
    alice = await make_user(client, "alice")
    body = {"medium": "email", "address": "a@example.org", "sid": "s", "client_secret": "c"}
    status, answer = await call(client, "POST", path, alice, body)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = await call(client, "POST", path, None, body)
    assert status == 401
    # The capability says so up front.
    _, capabilities = await call(client, "GET", "/capabilities", alice)
    assert capabilities["capabilities"]["m.3pid_changes"] == {"enabled": False}
    assert await call(client, "GET", "/account/3pid", alice) == (200, {"threepids": []})


@pytest.mark.parametrize("medium", ["email", "msisdn"])
async def test_request_token_medium_not_supported(make_client: MakeClient, medium: str) -> None:
    client = await make_client(ROOMS_CONFIG)
    body = {"client_secret": "secret", "email": "a@example.org", "send_attempt": 1}
    status, answer = await call(client, "POST", f"/account/3pid/{medium}/requestToken", None, body)
    assert (status, answer["errcode"]) == (400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")


async def test_unbind_answers_no_support(make_client: MakeClient) -> None:
    client = await make_client(ROOMS_CONFIG)
    alice = await make_user(client, "alice")
    body = {"medium": "email", "address": "a@example.org"}
    assert await call(client, "POST", "/account/3pid/unbind", alice, body) == (
        200,
        {"id_server_unbind_result": "no-support"},
    )
    status, answer = await call(client, "POST", "/account/3pid/unbind", alice, {"medium": 1})
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    response = await client.post(
        "/_matrix/client/v3/account/3pid/unbind", data=b"nope", headers=alice.headers
    )
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")
