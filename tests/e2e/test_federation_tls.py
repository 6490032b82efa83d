"""Two real `ranvier serve` processes with federation TLS listeners on loopback.

Certificates come from a test CA made here (trustme); the server names are
``127.0.0.1:<TLS port>``, so no DNS is involved. The outbound federation
client fetches each server's signed keys over TLS by server name.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import signedjson.key
import signedjson.sign
import trustme

from ranvier.config import FederationConfig
from ranvier.services.federation.client import (
    FederationClient,
    FederationResponseError,
    FederationTlsError,
)
from tests.e2e.harness import Server, free_port, init_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def _start_tls_server(folder: Path, ca: trustme.CA) -> tuple[Server, str]:
    folder.mkdir()
    config_path = init_config(folder)
    cert = ca.issue_cert("127.0.0.1")
    chain, key = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    tls_port = free_port()
    server_name = f"127.0.0.1:{tls_port}"
    server = Server(
        config_path,
        free_port(),
        RANVIER_SERVER_NAME=server_name,
        RANVIER_FEDERATION_TLS_LISTEN_HOST="127.0.0.1",
        RANVIER_FEDERATION_TLS_LISTEN_PORT=str(tls_port),
        RANVIER_FEDERATION_TLS_LISTEN_CERTIFICATE_PATH=str(chain),
        RANVIER_FEDERATION_TLS_LISTEN_PRIVATE_KEY_PATH=str(key),
    )
    return server, server_name


def _verify_keys(document: dict[str, Any], server_name: str) -> str:
    ((key_id, verify_key),) = document["verify_keys"].items()
    raw = base64.b64decode(verify_key["key"] + "=" * (-len(verify_key["key"]) % 4))
    key = signedjson.key.decode_verify_key_bytes(key_id, raw)
    signedjson.sign.verify_signed_json(document, server_name, key)
    return str(verify_key["key"])


async def test_two_servers_publish_their_keys_over_their_tls_listeners(
    tmp_path: Path, servers: list[Server]
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    first, first_name = _start_tls_server(tmp_path / "a", ca)
    servers.append(first)
    second, second_name = _start_tls_server(tmp_path / "b", ca)
    servers.append(second)
    client = FederationClient(
        FederationConfig(trusted_ca_file=ca_file, allow_private_addresses=True)
    )
    try:
        async with aiohttp.ClientSession() as session:
            await first.wait_ready(session)
            await second.wait_ready(session)
        first_keys = await client.request_json("GET", first_name, "/_matrix/key/v2/server")
        second_keys = await client.request_json("GET", second_name, "/_matrix/key/v2/server")
        # The client API is not on the federation listener.
        with pytest.raises(FederationResponseError) as raised:
            await client.request_json("GET", first_name, "/_matrix/client/versions")
        assert (raised.value.status, raised.value.errcode) == (404, "M_UNRECOGNIZED")
    finally:
        await client.close()
    assert first_keys["server_name"] == first_name
    assert second_keys["server_name"] == second_name
    assert _verify_keys(first_keys, first_name) != _verify_keys(second_keys, second_name)

    # Without the test CA, the certificate is refused.
    untrusting = FederationClient(FederationConfig(allow_private_addresses=True))
    try:
        with pytest.raises(FederationTlsError):
            await untrusting.request_json("GET", first_name, "/_matrix/key/v2/server")
    finally:
        await untrusting.close()

    # Any TLS client with the CA sees the same listener (plain aiohttp here).
    context = ssl.create_default_context(cafile=str(ca_file))
    port = first_name.rsplit(":", 1)[1]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}/_matrix/federation/v1/version", ssl=context) as response,
    ):
        assert response.status == 200
        assert (await response.json())["server"]["name"] == "Ranvier"

    for server in (first, second):
        assert server.terminate() == 0, server.log()
        assert "Traceback" not in server.log()
    # The startup line names the TLS listener as such.
    assert f"https://127.0.0.1:{port}" in first.log()
