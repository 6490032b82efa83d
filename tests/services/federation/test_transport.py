"""services/federation/transport.py over a fake federation client: the
requests it makes (method, destination, percent-encoded path, query, body)
and how it maps answers and failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from ranvier.errors import MatrixError
from ranvier.services.federation.client import (
    FederationBadResponse,
    FederationResponseError,
    FederationUnreachable,
    Query,
)
from ranvier.services.federation.sender import TransactionFailed
from ranvier.services.federation.transport import FederationTransport

PDU = {"type": "m.room.message", "room_id": "!r:remote.example"}


class FakeClient:
    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, str, Any, Any]] = []

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        self.calls.append((method, destination, path, query, content))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_get_missing_events_posts_the_spec_body_and_returns_the_events() -> None:
    client = FakeClient({"events": [PDU, "junk"]})
    events = await FederationTransport(client).get_missing_events(
        "remote.example", "!r/x:remote.example", ["$a"], ["$b"], 10, 3
    )
    assert events == [PDU]
    assert client.calls == [
        (
            "POST",
            "remote.example",
            "/_matrix/federation/v1/get_missing_events/%21r%2Fx%3Aremote.example",
            None,
            {"earliest_events": ["$a"], "latest_events": ["$b"], "limit": 10, "min_depth": 3},
        )
    ]


async def test_state_ids_passes_event_id_as_query() -> None:
    client = FakeClient({"pdu_ids": ["$s"], "auth_chain_ids": ["$c1", "$c2"]})
    answer = await FederationTransport(client).state_ids("remote.example", "!r:x", "$e:x")
    assert answer == (["$s"], ["$c1", "$c2"])
    assert client.calls == [
        ("GET", "remote.example", "/_matrix/federation/v1/state_ids/%21r%3Ax",
         {"event_id": "$e:x"}, None)
    ]  # fmt: skip


async def test_state_ids_refuses_a_malformed_answer() -> None:
    client = FakeClient({"pdu_ids": [1], "auth_chain_ids": []})
    with pytest.raises(MatrixError) as caught:
        await FederationTransport(client).state_ids("remote.example", "!r:x", "$e")
    assert caught.value.status == 502


async def test_event_returns_the_one_pdu_or_none_on_404() -> None:
    client = FakeClient({"origin": "remote.example", "pdus": [PDU]})
    transport = FederationTransport(client)
    assert await transport.event("remote.example", "$e/1") == PDU
    assert client.calls[0][2] == "/_matrix/federation/v1/event/%24e%2F1"
    client.answer = FederationResponseError("remote.example", 404, {"errcode": "M_NOT_FOUND"})
    assert await transport.event("remote.example", "$e") is None
    client.answer = {"pdus": [PDU, PDU]}
    with pytest.raises(MatrixError):
        await transport.event("remote.example", "$e")


async def test_make_join_asks_for_every_version_and_keeps_the_remote_error() -> None:
    client = FakeClient({"room_version": "10", "event": PDU})
    transport = FederationTransport(client)
    assert await transport.make_join("remote.example", "!r:x", "@u:us", ["9", "10"]) == {
        "room_version": "10",
        "event": PDU,
    }
    assert client.calls == [
        ("GET", "remote.example", "/_matrix/federation/v1/make_join/%21r%3Ax/%40u%3Aus",
         {"ver": ["9", "10"]}, None)
    ]  # fmt: skip
    client.answer = FederationResponseError(
        "remote.example",
        400,
        {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "no", "room_version": "99"},
    )
    with pytest.raises(MatrixError) as caught:
        await transport.make_join("remote.example", "!r:x", "@u:us", ["10"])
    assert (caught.value.status, caught.value.errcode) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
    assert caught.value.extra == {"room_version": "99"}


async def test_send_join_puts_the_event_to_v2() -> None:
    client = FakeClient({"state": [], "auth_chain": []})
    answer = await FederationTransport(client).send_join("remote.example", "!r:x", "$j", PDU)
    assert answer == {"state": [], "auth_chain": []}
    assert client.calls == [
        ("PUT", "remote.example", "/_matrix/federation/v2/send_join/%21r%3Ax/%24j", None, PDU)
    ]


async def test_send_transaction_puts_the_body() -> None:
    client = FakeClient({"pdus": {}})
    body = {"origin": "us", "pdus": [], "edus": []}
    assert await FederationTransport(client).send_transaction("remote.example", "t.1", body) == {
        "pdus": {}
    }
    assert client.calls == [
        ("PUT", "remote.example", "/_matrix/federation/v1/send/t.1", None, body)
    ]


@pytest.mark.parametrize(
    ("error", "status", "retriable"),
    [
        (FederationUnreachable("remote.example", "down"), None, True),
        (FederationBadResponse("remote.example", "not JSON"), None, True),
        (FederationResponseError("remote.example", 502, None), 502, True),
        (FederationResponseError("remote.example", 400, {"errcode": "M_BAD_JSON"}), 400, False),
    ],
)
async def test_send_transaction_failures_become_transaction_failed(
    error: Exception, status: int | None, retriable: bool
) -> None:
    with pytest.raises(TransactionFailed) as caught:
        await FederationTransport(FakeClient(error)).send_transaction("remote.example", "t", {})
    assert (caught.value.status, caught.value.retriable) == (status, retriable)


async def test_query_directory_returns_room_and_servers() -> None:
    client = FakeClient({"room_id": "!r:x", "servers": ["x", 3, "y"]})
    answer = await FederationTransport(client).query_directory("x", "#a:x")
    assert answer == ("!r:x", ["x", "y"])
    assert client.calls == [
        ("GET", "x", "/_matrix/federation/v1/query/directory", {"room_alias": "#a:x"}, None)
    ]
