"""Media across federation, Ranvier and Synapse as real processes over TLS on
loopback (the set-up of tests/e2e/test_federation_synapse.py): each server's
user uploads an image, the other server's user downloads it and a thumbnail
through their own server's authenticated media endpoints. Synapse then
fetches from Ranvier's /_matrix/federation/v1/media/download and /thumbnail
(multipart/mixed), and Ranvier parses Synapse's answers."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from tests.e2e.test_federation_synapse import (  # noqa: F401  (fixtures)
    SynapseNode,
    _require_synapse,
    _stop_ranvier,
    _stop_synapse,
    network,
    session,
    test_ca,
)
from tests.e2e.test_federation_two_ranvier import Node, User, _register

pytestmark = pytest.mark.e2e

MEDIA = "/_matrix/client/v1/media"


def _png(size: tuple[int, int], color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


async def _upload(http: aiohttp.ClientSession, user: User, data: bytes) -> str:
    headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "image/png"}
    async with http.post(
        f"{user.node.base_url}/_matrix/media/v3/upload?filename=pic.png", data=data, headers=headers
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        uri: str = body["content_uri"]
        return uri


async def _get(http: aiohttp.ClientSession, user: User, path: str) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {user.token}"}
    async with http.get(f"{user.node.base_url}{MEDIA}{path}", headers=headers) as response:
        return response.status, response.content_type, await response.read()


async def _fetch_across(
    http: aiohttp.ClientSession, uploader: User, reader: User, color: str
) -> None:
    data = _png((400, 300), color)
    uri = await _upload(http, uploader, data)
    where = uri.removeprefix("mxc://")
    status, content_type, body = await _get(http, reader, f"/download/{where}")
    assert (status, content_type) == (200, "image/png"), body[:300]
    assert body == data
    status, _, thumbnail = await _get(
        http, reader, f"/thumbnail/{where}?width=96&height=96&method=crop"
    )
    assert status == 200, thumbnail[:300]
    assert Image.open(io.BytesIO(thumbnail)).size == (96, 96)
    status, _, missing = await _get(http, reader, f"/download/{where.split('/')[0]}/nosuchmedia")
    assert status == 404, missing[:300]


async def test_media_between_ranvier_and_synapse(
    network: tuple[Node, SynapseNode],  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    _require_synapse()
    ranvier, synapse = network
    ranvier.start()
    synapse.start()
    assert ranvier.server is not None
    await ranvier.server.wait_ready(session)
    await synapse.wait_ready(session)
    alice = await _register(session, ranvier, "alice")
    sam = await _register(session, synapse, "sam")  # type: ignore[arg-type]

    await _fetch_across(session, alice, sam, "red")  # Synapse fetches from Ranvier
    await _fetch_across(session, sam, alice, "blue")  # Ranvier fetches from Synapse

    _stop_synapse(synapse)
    _stop_ranvier(ranvier)
    log = ranvier.server.log()
    assert "Traceback" not in log
    # Synapse came through the federation media endpoints (not the legacy ones).
    assert "GET /_matrix/federation/v1/media/download/" in log
    assert "GET /_matrix/media/v3/download/" not in log
