"""HttpRemoteMemberships: the federation requests for invites, leaves and
knocks (paths percent-encoded, the v2 invite and send_leave, v1 knock)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from ranvier.services.federation.client import FederationClient
from ranvier.services.federation.invites import HttpRemoteMemberships


class RecordingClient:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, str, Any, Any]] = []

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        self.calls.append((method, destination, path, query, content))
        return self.answer


def remote(answer: Any) -> tuple[HttpRemoteMemberships, RecordingClient]:
    client = RecordingClient(answer)
    return HttpRemoteMemberships(cast(FederationClient, client)), client


async def test_invite_is_a_v2_put_with_encoded_ids() -> None:
    memberships, client = remote({"event": {"x": 1}})
    body = {"room_version": "10", "event": {}, "invite_room_state": []}
    answer = await memberships.send_invite("b.test", "!r:a.test", "$e/1", body)
    assert answer == {"event": {"x": 1}}
    assert client.calls == [
        ("PUT", "b.test", "/_matrix/federation/v2/invite/%21r%3Aa.test/%24e%2F1", None, body)
    ]


async def test_make_and_send_for_leave_and_knock() -> None:
    memberships, client = remote({"room_version": "10", "event": {}})
    await memberships.make_membership("leave", "a.test", "!r:a.test", "@u:b.test", None)
    await memberships.make_membership("knock", "a.test", "!r:a.test", "@u:b.test", ["7", "10"])
    await memberships.send_membership("leave", "a.test", "!r:a.test", "$e", {"k": 1})
    await memberships.send_membership("knock", "a.test", "!r:a.test", "$e", {"k": 2})
    assert client.calls == [
        (
            "GET",
            "a.test",
            "/_matrix/federation/v1/make_leave/%21r%3Aa.test/%40u%3Ab.test",
            None,
            None,
        ),
        (
            "GET",
            "a.test",
            "/_matrix/federation/v1/make_knock/%21r%3Aa.test/%40u%3Ab.test",
            {"ver": ["7", "10"]},
            None,
        ),
        ("PUT", "a.test", "/_matrix/federation/v2/send_leave/%21r%3Aa.test/%24e", None, {"k": 1}),
        ("PUT", "a.test", "/_matrix/federation/v1/send_knock/%21r%3Aa.test/%24e", None, {"k": 2}),
    ]


async def test_a_non_object_answer_reads_as_empty() -> None:
    memberships, _ = remote([200, {}])
    assert await memberships.send_membership("leave", "a.test", "!r:a.test", "$e", {}) == {}
