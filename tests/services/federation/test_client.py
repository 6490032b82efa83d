"""The outbound federation client against real TLS listeners on loopback.

A Ranvier app serves its federation TLS listener (``serve`` with a TLS site,
certificate from a test CA made here), and the client reaches it by the
server name ``127.0.0.1:PORT``, as two test servers federate without DNS.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import signedjson.key
import signedjson.sign
import trustme
from aiohttp import web

from ranvier.api.http import Handler, TlsSite, serve
from ranvier.api.tls_listener import server_ssl_context
from ranvier.app import build_app
from ranvier.config import FederationConfig, parse_config
from ranvier.core.signing import SigningKey
from ranvier.services.federation.client import (
    FederationAddressDenied,
    FederationBadResponse,
    FederationClient,
    FederationResponseError,
    FederationTlsError,
    FederationUnreachable,
    encode_query,
)
from ranvier.services.federation.dns import SrvRecord
from tests.services.federation.support import (
    FakeDns,
    connection_recorder,
    https_server,
    server_context,
    write_ca,
    write_server_cert,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unpadded_b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    return write_ca(ca, tmp_path)


@asynccontextmanager
async def ranvier_with_tls(
    ca: trustme.CA, folder: Path, *, serve_client_api: bool = False
) -> AsyncIterator[tuple[str, int]]:
    """A Ranvier app on a plain port plus its TLS listener; yields (server name, plain port).

    The server name is ``127.0.0.1:<TLS port>`` and the certificate is for 127.0.0.1.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tls_port, plain_port = _free_port(), _free_port()
    certificate, private_key = write_server_cert(ca, folder, "127.0.0.1")
    server_name = f"127.0.0.1:{tls_port}"
    config = parse_config(
        {
            "server_name": server_name,
            "database": "sqlite:///data/homeserver.db",
            "federation": {
                "tls_listen": {
                    "host": "127.0.0.1",
                    "port": tls_port,
                    "certificate_path": str(certificate),
                    "private_key_path": str(private_key),
                    "serve_client_api": serve_client_api,
                }
            },
        },
        folder,
        env={},
    )
    app = build_app(config, signing_key=SigningKey.generate("tls1"))
    site = TlsSite("127.0.0.1", tls_port, server_ssl_context(config.federation.tls_listen))
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(app, "127.0.0.1", plain_port, stop, started=lambda _: ready.set(), tls_sites=[site])
    )
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield server_name, plain_port
    finally:
        stop.set()
        await task


def _answer(respond: Callable[[web.Request], web.Response]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        return respond(request)

    return handle


def _client(ca_file: Path | None, **options: Any) -> FederationClient:
    options.setdefault("allow_private_addresses", True)
    return FederationClient(FederationConfig(trusted_ca_file=ca_file, **options))


# --- a Ranvier TLS listener, by server name 127.0.0.1:PORT ------------------------------


async def test_fetches_version_and_signed_keys_over_tls_by_server_name(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    client = _client(ca_file)
    async with ranvier_with_tls(ca, tmp_path) as (server_name, _):
        try:
            version = await client.request_json("GET", server_name, "/_matrix/federation/v1/version")
            keys = await client.request_json("GET", server_name, "/_matrix/key/v2/server")
        finally:
            await client.close()
    assert version["server"]["name"] == "Ranvier"
    assert keys["server_name"] == server_name
    ((key_id, verify_key),) = keys["verify_keys"].items()
    key = signedjson.key.decode_verify_key_bytes(key_id, _unpadded_b64decode(verify_key["key"]))
    signedjson.sign.verify_signed_json(keys, server_name, key)


async def test_the_tls_listener_serves_only_federation_unless_configured(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    client = _client(ca_file)
    try:
        async with ranvier_with_tls(ca, tmp_path / "fed-only") as (server_name, _):
            with pytest.raises(FederationResponseError) as raised:
                await client.request_json("GET", server_name, "/_matrix/client/versions")
            assert (raised.value.status, raised.value.errcode) == (404, "M_UNRECOGNIZED")
        async with ranvier_with_tls(ca, tmp_path / "both", serve_client_api=True) as (name, _):
            versions = await client.request_json("GET", name, "/_matrix/client/versions")
            assert "v1.1" in versions["versions"]
    finally:
        await client.close()


async def test_the_plain_listener_still_serves_the_client_api(
    ca: trustme.CA, tmp_path: Path
) -> None:
    import aiohttp

    async with (
        ranvier_with_tls(ca, tmp_path) as (_, plain_port),
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{plain_port}/_matrix/client/versions") as response,
    ):
        assert response.status == 200


async def test_refuses_a_certificate_from_an_untrusted_ca(
    ca: trustme.CA, tmp_path: Path
) -> None:
    client = _client(None)  # system CAs only: the test CA is unknown
    try:
        async with ranvier_with_tls(ca, tmp_path) as (server_name, _):
            with pytest.raises(FederationTlsError, match="certificate verify failed"):
                await client.request_json("GET", server_name, "/_matrix/key/v2/server")
    finally:
        await client.close()


async def test_refuses_a_certificate_for_another_name(ca: trustme.CA, ca_file: Path) -> None:
    app = web.Application()
    app.router.add_get("/_matrix/key/v2/server", _answer(lambda _r: web.json_response({})))
    client = _client(ca_file)
    try:
        async with https_server(app, server_context(ca, "other.test")) as port:
            with pytest.raises(FederationTlsError):
                await client.request_json("GET", f"127.0.0.1:{port}", "/_matrix/key/v2/server")
    finally:
        await client.close()


# --- the SSRF guard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "hosts"),
    [
        ("127.0.0.1:{port}", {}),
        ("inside.test:{port}", {"inside.test": ["127.0.0.1"]}),
        # An IPv4-mapped IPv6 answer is the IPv4 address it maps (CVE-2021-21392).
        ("mapped.test:{port}", {"mapped.test": ["::ffff:127.0.0.1"]}),
    ],
)
async def test_no_connection_is_opened_to_a_private_address(
    ca_file: Path, destination: str, hosts: dict[str, list[str]]
) -> None:
    client = FederationClient(
        FederationConfig(trusted_ca_file=ca_file, allow_private_addresses=False),
        dns=FakeDns(hosts=hosts),
    )
    try:
        async with connection_recorder() as (port, connections):
            with pytest.raises(FederationAddressDenied):
                await client.request_json("GET", destination.format(port=port), "/_matrix/key/v2/server")
            await asyncio.sleep(0.05)
            assert connections == []
    finally:
        await client.close()


async def test_the_recorder_sees_connections_when_private_addresses_are_allowed(
    ca_file: Path,
) -> None:
    client = _client(ca_file)  # allow_private_addresses=True, as in the other tests
    try:
        async with connection_recorder() as (port, connections):
            with pytest.raises(FederationUnreachable):  # the recorder hangs up at once
                await client.request_json("GET", f"127.0.0.1:{port}", "/_matrix/key/v2/server")
            assert len(connections) == 1
    finally:
        await client.close()


# --- requests and answers ---------------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "path_qs": request.raw_path,
            "host": request.headers.get("Host"),
            "authorization": request.headers.get("Authorization"),
            "content_type": request.headers.get("Content-Type"),
            "body": (await request.read()).decode(),
        }
    )


async def test_sends_host_header_query_body_and_the_authorization_hook(
    ca: trustme.CA, ca_file: Path
) -> None:
    calls: list[tuple[str, str, str, Any]] = []

    def authorization(method: str, destination: str, path: str, content: Any) -> str:
        calls.append((method, destination, path, content))
        return 'X-Matrix origin="a.test",key="ed25519:1",sig="s"'

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    client = FederationClient(
        FederationConfig(trusted_ca_file=ca_file, allow_private_addresses=True),
        authorization=authorization,
    )
    try:
        async with https_server(app, server_context(ca, "127.0.0.1")) as port:
            destination = f"127.0.0.1:{port}"
            echoed = await client.request_json(
                "PUT",
                destination,
                "/_matrix/federation/v1/send/txn%2F1",
                query={"v": "1", "server_name": ["a b", "c&d"]},
                content={"pdus": [], "edus": []},
            )
    finally:
        await client.close()
    path = "/_matrix/federation/v1/send/txn%2F1?v=1&server_name=a%20b&server_name=c%26d"
    assert echoed == {
        "method": "PUT",
        "path_qs": path,
        "host": destination,
        "authorization": 'X-Matrix origin="a.test",key="ed25519:1",sig="s"',
        "content_type": "application/json",
        "body": '{"pdus":[],"edus":[]}',
    }
    assert calls == [("PUT", destination, path, {"pdus": [], "edus": []})]


async def test_an_unsigned_get_has_no_authorization_and_no_body(
    ca: trustme.CA, ca_file: Path
) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    client = _client(ca_file)
    try:
        async with https_server(app, server_context(ca, "127.0.0.1")) as port:
            echoed = await client.request_json("GET", f"127.0.0.1:{port}", "/_matrix/key/v2/server")
    finally:
        await client.close()
    assert (echoed["authorization"], echoed["body"], echoed["content_type"]) == (None, "", None)


async def test_an_ipv6_literal_server_name(ca: trustme.CA, ca_file: Path) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    client = _client(ca_file)
    try:
        async with https_server(app, server_context(ca, "::1"), host="::1") as port:
            echoed = await client.request_json("GET", f"[::1]:{port}", "/a%2Fb", query={"q": "1"})
    finally:
        await client.close()
    assert (echoed["host"], echoed["path_qs"]) == (f"[::1]:{port}", "/a%2Fb?q=1")


def test_query_encoding() -> None:
    assert encode_query(None) == ""
    assert encode_query({"limit": "10", "v": ["$a:b", "/x"]}) == "limit=10&v=%24a%3Ab&v=%2Fx"


@pytest.mark.parametrize(
    ("respond", "error", "fields"),
    [
        (
            lambda _r: web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=403),
            FederationResponseError,
            {"status": 403, "errcode": "M_FORBIDDEN", "error": "no"},
        ),
        (
            lambda _r: web.Response(status=502, text="<html>bad gateway</html>"),
            FederationResponseError,
            {"status": 502, "errcode": None, "body": None},
        ),
        (
            lambda _r: web.Response(status=302, headers={"Location": "https://elsewhere.test/"}),
            FederationResponseError,
            {"status": 302},
        ),
        (lambda _r: web.Response(text="not json"), FederationBadResponse, {}),
        (lambda _r: web.Response(), FederationBadResponse, {}),
        (lambda _r: web.json_response({"x": "y" * 2000}), FederationBadResponse, {}),
    ],
    ids=["matrix-error", "html-error", "redirect-not-followed", "not-json", "empty", "too-large"],
)
async def test_failed_answers_raise_typed_errors(
    ca: trustme.CA, ca_file: Path, respond: Any, error: type[Exception], fields: dict[str, Any]
) -> None:
    app = web.Application()
    app.router.add_get("/x", _answer(respond))
    client = _client(ca_file, max_response_size=1000)
    try:
        async with https_server(app, server_context(ca, "127.0.0.1")) as port:
            with pytest.raises(error) as raised:
                await client.request_json("GET", f"127.0.0.1:{port}", "/x")
    finally:
        await client.close()
    assert raised.value.destination == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    for name, value in fields.items():
        assert getattr(raised.value, name) == value


async def test_a_slow_answer_times_out(ca: trustme.CA, ca_file: Path) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/slow", slow)
    client = _client(ca_file, request_timeout=200)
    try:
        async with https_server(app, server_context(ca, "127.0.0.1")) as port:
            started = asyncio.get_running_loop().time()
            with pytest.raises(FederationUnreachable, match="timed out"):
                await client.request_json("GET", f"127.0.0.1:{port}", "/slow")
            assert asyncio.get_running_loop().time() - started < 2
    finally:
        await client.close()


async def test_an_unresolvable_name_is_unreachable(ca_file: Path) -> None:
    client = FederationClient(FederationConfig(trusted_ca_file=ca_file), dns=FakeDns())
    try:
        with pytest.raises(FederationUnreachable):
            await client.request_json("GET", "bad name", "/x")
        with pytest.raises(FederationUnreachable):
            await client.request_json("GET", "nowhere.test:8448", "/x")
    finally:
        await client.close()


async def test_srv_targets_are_tried_in_turn_with_the_server_names_certificate(
    ca: trustme.CA, ca_file: Path, unused_tcp_port: int
) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    async with https_server(app, server_context(ca, "fed.test")) as port:
        dns = FakeDns(
            srv_records={
                "_matrix-fed._tcp.fed.test": [
                    SrvRecord(1, 0, unused_tcp_port, "dead.test"),  # nothing listens there
                    SrvRecord(2, 0, port, "live.test"),
                ]
            },
            # fed.test itself has no address: its .well-known is unreachable (step 4 on).
            hosts={"dead.test": ["127.0.0.1"], "live.test": ["127.0.0.1"]},
        )
        client = FederationClient(
            FederationConfig(trusted_ca_file=ca_file, allow_private_addresses=True), dns=dns
        )
        try:
            echoed = await client.request_json("GET", "fed.test", "/_matrix/key/v2/server")
        finally:
            await client.close()
    assert echoed["host"] == "fed.test"
    assert dns.queries.index("A dead.test") < dns.queries.index("A live.test")
