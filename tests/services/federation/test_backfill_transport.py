"""FederationTransport.backfill over a fake client: the request (Server-Server
API, GET /v1/backfill/{roomId}?v=...&limit=) and malformed answers."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.errors import MatrixError
from ranvier.services.federation.transport import FederationTransport
from tests.services.federation.test_transport import PDU, FakeClient


async def test_backfill_repeats_v_and_returns_the_pdus() -> None:
    client = FakeClient({"origin": "remote.example", "pdus": [PDU, "junk", 3]})
    pdus = await FederationTransport(client).backfill("remote.example", "!r:x", ["$a", "$b"], 50)
    assert pdus == [PDU]
    assert client.calls == [
        ("GET", "remote.example", "/_matrix/federation/v1/backfill/%21r%3Ax",
         {"v": ["$a", "$b"], "limit": "50"}, None)
    ]  # fmt: skip


@pytest.mark.parametrize("answer", [[], "text", {"pdus": {"a": 1}}, {"no": "pdus"}])
async def test_backfill_refuses_a_malformed_answer(answer: Any) -> None:
    with pytest.raises(MatrixError) as caught:
        await FederationTransport(FakeClient(answer)).backfill("remote.example", "!r:x", ["$a"], 5)
    assert caught.value.status == 502
