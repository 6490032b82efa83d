"""POST /user/{userId}/filter and GET /user/{userId}/filter/{filterId}."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import MakeClient
from tests.api.user_data_fakes import auth, fake_client

BASE = "/_matrix/client/v3/user/@alice:localhost/filter"
EXAMPLE = {
    "room": {"timeline": {"limit": 10, "types": ["m.room.message"]}},
    "presence": {"not_senders": ["@bob:localhost"]},
    "event_fields": ["type", "content"],
}


async def test_upload_then_download(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.post(BASE, json=EXAMPLE, headers=auth("alice"))
    assert response.status == 200
    body = await response.json()
    assert body == {"filter_id": "0"}
    response = await client.post(BASE, json={}, headers=auth("alice"))
    assert await response.json() == {"filter_id": "1"}

    response = await client.get(f"{BASE}/0", headers=auth("alice"))
    assert response.status == 200
    assert await response.json() == EXAMPLE
    response = await client.get(f"{BASE}/1", headers=auth("alice"))
    assert await response.json() == {}


async def test_filter_ids_are_per_user_and_private(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    await client.post(BASE, json=EXAMPLE, headers=auth("alice"))
    bob_base = "/_matrix/client/v3/user/@bob:localhost/filter"
    response = await client.post(bob_base, json={}, headers=auth("bob"))
    assert await response.json() == {"filter_id": "0"}
    response = await client.get(f"{bob_base}/0", headers=auth("bob"))
    assert await response.json() == {}
    # Bob can neither read nor write Alice's filters.
    response = await client.get(f"{BASE}/0", headers=auth("bob"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"
    response = await client.post(BASE, json={}, headers=auth("bob"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"


async def test_guests_may_use_filters(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client, guests={"alice"})
    response = await client.post(BASE, json={}, headers=auth("alice"))
    assert response.status == 200


UNKNOWN_IDS = ["7", "abc", "-1", "1e3", "99999999999999999999"]
INVALID_FILTERS = [
    (b"not json", "M_NOT_JSON"),
    (b"[]", "M_BAD_JSON"),
    (b'{"room": {"timeline": {"limit": "ten"}}}', "M_BAD_JSON"),
    (b'{"room": {"timeline": {"limit": 0}}}', "M_INVALID_PARAM"),
    (b'{"room": {"rooms": ["not-a-room"]}}', "M_INVALID_PARAM"),
    (b'{"event_format": "xml"}', "M_INVALID_PARAM"),
    (b'{"presence": {"senders": "@a:x"}}', "M_BAD_JSON"),
]


async def test_unknown_filter_is_404(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    await client.post(BASE, json={}, headers=auth("alice"))
    for filter_id in UNKNOWN_IDS:
        response = await client.get(f"{BASE}/{filter_id}", headers=auth("alice"))
        assert response.status == 404, filter_id
        assert (await response.json())["errcode"] == "M_NOT_FOUND"


async def test_invalid_filter_is_400_and_not_stored(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    for body, errcode in INVALID_FILTERS:
        response = await client.post(BASE, data=body, headers=auth("alice"))
        assert response.status == 400, body
        payload: dict[str, Any] = await response.json()
        assert payload["errcode"] == errcode, body
    response = await client.get(f"{BASE}/0", headers=auth("alice"))
    assert response.status == 404


async def test_auth_required(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.post(BASE, json={})
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_MISSING_TOKEN"
    response = await client.get(f"{BASE}/0", headers={"Authorization": "Bearer nope"})
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_UNKNOWN_TOKEN"


async def test_resolve_filter_param(make_client: MakeClient) -> None:
    from ranvier.core.filters import DEFAULT_FILTER
    from ranvier.errors import MatrixError

    client, _, hs = await fake_client(make_client)
    await client.post(BASE, json=EXAMPLE, headers=auth("alice"))
    alice = "@alice:localhost"
    assert await hs.filters.resolve_filter_param(alice, None) == DEFAULT_FILTER
    stored = await hs.filters.resolve_filter_param(alice, "0")
    assert stored.room.timeline.limit == 10
    inline = await hs.filters.resolve_filter_param(alice, '{"room": {"timeline": {"limit": 3}}}')
    assert inline.room.timeline.limit == 3
    for bad, errcode in [
        ("5", "M_INVALID_PARAM"),
        ("{x", "M_NOT_JSON"),
        ('{"room": 1}', "M_BAD_JSON"),
    ]:
        with pytest.raises(MatrixError) as info:
            await hs.filters.resolve_filter_param(alice, bad)
        assert (info.value.status, info.value.errcode) == (400, errcode)
    # Another user's filter ID is unknown to this user.
    with pytest.raises(MatrixError):
        await hs.filters.resolve_filter_param("@bob:localhost", "0")


async def test_parsed_filters_are_kept_per_user_and_text(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sends the same filter with every /sync: it is parsed once,
    a stored one read once; another user's ID still resolves to nothing, and
    bad filters are refused every time (nothing of them kept)."""
    from ranvier.errors import MatrixError

    client, _, hs = await fake_client(make_client)
    await client.post(BASE, json=EXAMPLE, headers=auth("alice"))
    bob_base = "/_matrix/client/v3/user/@bob:localhost/filter"
    await client.post(bob_base, json=EXAMPLE, headers=auth("bob"))
    reads: list[tuple[str, int]] = []
    original = hs.filters.store.get_filter

    async def counted(user_id: str, filter_id: int) -> str | None:
        reads.append((user_id, filter_id))
        return await original(user_id, filter_id)

    monkeypatch.setattr(hs.filters.store, "get_filter", counted)
    alice, bob = "@alice:localhost", "@bob:localhost"
    first = await hs.filters.resolve_filter_param(alice, "0")
    assert await hs.filters.resolve_filter_param(alice, "0") is first
    assert reads == [(alice, 0)]
    # Bob's own filter 0 has the same text: read once for him, parsed once in all.
    assert await hs.filters.resolve_filter_param(bob, "0") is first
    assert reads == [(alice, 0), (bob, 0)]
    with pytest.raises(MatrixError):
        await hs.filters.resolve_filter_param("@carol:localhost", "0")
    inline = '{"room": {"timeline": {"limit": 3}}}'
    parsed = await hs.filters.resolve_filter_param(alice, inline)
    assert await hs.filters.resolve_filter_param(bob, inline) is parsed
    for _ in range(2):
        with pytest.raises(MatrixError) as info:
            await hs.filters.resolve_filter_param(alice, '{"room": 1}')
        assert info.value.errcode == "M_BAD_JSON"
