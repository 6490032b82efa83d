"""Uploads as a hostile or broken client sends them, over raw sockets against a
real listener (``ranvier.api.http.serve``, the path `ranvier serve` takes), on
both engines: a body shorter than its Content-Length, a malformed
Content-Length, a client vanishing mid-upload. Each gets its 4xx (when anyone
is left to answer), no file is left half-written, and the server is unharmed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.api.test_hostile_clients import (  # noqa: F401  (serve_app is a fixture)
    FAST_LIMITS,
    ServeApp,
    assert_victim_still_served,
    read_response,
    read_until_closed,
    request_bytes,
    serve_app,
)

UPLOAD = "/_matrix/media/v3/upload"


def media_files(tmp_path: Path) -> list[Path]:
    """Every file in the default media store (<config dir>/data/media), tmp/ included."""
    store = tmp_path / "data" / "media"
    return sorted(p for p in store.rglob("*") if p.is_file()) if store.exists() else []


def upload_bytes(token: str, length: str, body: bytes) -> bytes:
    return request_bytes(
        "POST",
        UPLOAD,
        f"Authorization: Bearer {token}",
        "Content-Type: application/octet-stream",
        f"Content-Length: {length}",
        body=body,
    )


async def test_body_shorter_than_content_length_gets_408(
    serve_app: ServeApp,  # noqa: F811
    tmp_path: Path,
) -> None:
    served = await serve_app(**FAST_LIMITS)
    reader, writer = await served.connect()
    writer.write(upload_bytes(served.attacker_token, "100000", b"z" * 1000))
    response = await read_response(reader)
    assert response.status == 408
    assert response.json()["errcode"] == "M_UNKNOWN"
    assert await read_until_closed(reader) == b""
    writer.close()
    assert media_files(tmp_path) == []
    await assert_victim_still_served(served)


async def test_client_vanishing_mid_upload_leaves_no_file(
    serve_app: ServeApp,  # noqa: F811
    tmp_path: Path,
) -> None:
    served = await serve_app(**FAST_LIMITS)
    _reader, writer = await served.connect()
    writer.write(upload_bytes(served.attacker_token, "100000", b"z" * 5000))
    await writer.drain()
    await asyncio.sleep(0.2)  # the upload has begun
    writer.transport.abort()
    await asyncio.sleep(0.3)
    assert media_files(tmp_path) == []
    await assert_victim_still_served(served)


async def test_malformed_content_length_gets_400(
    serve_app: ServeApp,  # noqa: F811
    tmp_path: Path,
) -> None:
    served = await serve_app()
    reader, writer = await served.connect()
    writer.write(upload_bytes(served.attacker_token, "12abc", b"hello world!"))
    response = await read_response(reader)
    assert response.status == 400
    assert response.json() == {"errcode": "M_UNRECOGNIZED", "error": "Malformed HTTP request"}
    writer.close()
    assert media_files(tmp_path) == []
    await assert_victim_still_served(served)


async def test_body_longer_than_content_length(
    serve_app: ServeApp,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The declared length is the body (RFC 9112 §6.3); what follows is read as
    the next request. Sent apart, the upload is stored with its declared bytes
    and the rest answered 400; sent in one piece, the parser refuses the whole
    read (400) and nothing is stored. Either way no other bytes reach a file."""
    served = await serve_app()
    reader, writer = await served.connect()
    writer.write(upload_bytes(served.attacker_token, "10", b"0123456789"))
    response = await read_response(reader)
    assert response.status == 200
    writer.write(b"not a request\r\n\r\n")
    assert (await read_response(reader)).status == 400
    writer.close()
    assert [p.read_bytes() for p in media_files(tmp_path)] == [b"0123456789"]

    reader, writer = await served.connect()
    writer.write(
        upload_bytes(served.attacker_token, "10", b"abcdefghij" + b"not a request\r\n\r\n")
    )
    response = await read_response(reader)
    assert (response.status, response.json()["errcode"]) == (400, "M_UNRECOGNIZED")
    assert await read_until_closed(reader) == b""
    writer.close()
    assert [p.read_bytes() for p in media_files(tmp_path)] == [b"0123456789"]
    await assert_victim_still_served(served)
