"""Discovery endpoints: /versions, .well-known, server keys, federation version."""

from __future__ import annotations

import base64
import time
from typing import Any

import signedjson.key
import signedjson.sign
from aiohttp.test_utils import TestClient

import ranvier
from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey

MakeClient = Any  # the make_client fixture of conftest.py


async def test_versions_answers_without_authentication(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/_matrix/client/versions")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"versions", "unstable_features"}
    # matrix-js-sdk's autodiscovery needs one of its SUPPORTED_MATRIX_VERSIONS
    # (v1.1 … v1.13 in js-sdk 43) or it rejects the server. Which releases are
    # listed, and why: tests/api/test_versions_api.py.
    assert body["versions"][0] == "v1.1"


async def test_client_well_known_is_404_when_not_configured(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/.well-known/matrix/client")
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_NOT_FOUND"


async def test_client_well_known_announces_the_configured_base_url(
    make_client: MakeClient,
) -> None:
    client = await make_client({"well_known": {"client_base_url": "https://matrix.example.org"}})
    response = await client.get("/.well-known/matrix/client")
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert await response.json() == {"m.homeserver": {"base_url": "https://matrix.example.org"}}


async def test_server_well_known_is_404_when_not_configured(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/.well-known/matrix/server")
    assert response.status == 404
    assert (await response.json())["errcode"] == "M_NOT_FOUND"


async def test_server_well_known_announces_the_configured_delegation(
    make_client: MakeClient,
) -> None:
    client = await make_client({"well_known": {"server": "matrix.example.org:443"}})
    response = await client.get("/.well-known/matrix/server")
    assert response.status == 200
    assert await response.json() == {"m.server": "matrix.example.org:443"}


def _unpadded_b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _verify(document: dict[str, Any], server_name: str) -> None:
    """Check the self-signature with matrix.org's reference library."""
    ((key_id, verify_key),) = document["verify_keys"].items()
    algorithm, version = key_id.split(":", 1)
    key = signedjson.key.decode_verify_key_bytes(
        key_id, _unpadded_b64decode(verify_key["key"])
    )
    assert (algorithm, key.version) == ("ed25519", version)
    signedjson.sign.verify_signed_json(document, server_name, key)


async def test_server_keys_are_self_signed_with_the_configured_key(
    make_client: MakeClient, signing_key: SigningKey
) -> None:
    client = await make_client({"server_name": "example.org"})
    response = await client.get("/_matrix/key/v2/server")
    assert response.status == 200
    document = await response.json()
    assert document["server_name"] == "example.org"
    assert set(document["verify_keys"]) == {"ed25519:test1"}
    assert document["old_verify_keys"] == {}
    assert set(document["signatures"]) == {"example.org"}
    assert set(document["signatures"]["example.org"]) == {"ed25519:test1"}
    _verify(document, "example.org")


async def test_server_keys_are_valid_for_the_configured_duration(
    make_client: MakeClient, now_ms: int
) -> None:
    client = await make_client({"key_valid_for": "1h"})
    document = await (await client.get("/_matrix/key/v2/server")).json()
    assert document["valid_until_ts"] == now_ms + 3_600_000


async def test_server_keys_valid_until_is_in_the_future_by_default(
    aiohttp_client: Any, tmp_path: Any, signing_key: SigningKey
) -> None:
    config = parse_config({}, tmp_path, env={})
    client = await aiohttp_client(build_app(config, signing_key=signing_key))
    before_ms = int(time.time() * 1000)
    document = await (await client.get("/_matrix/key/v2/server")).json()
    _verify(document, "localhost")
    seven_days_ms = 7 * 24 * 3600 * 1000
    assert before_ms + seven_days_ms <= document["valid_until_ts"] <= before_ms + seven_days_ms + 60_000


async def test_legacy_key_id_path_returns_the_same_keys(client: TestClient[Any, Any]) -> None:
    current = await (await client.get("/_matrix/key/v2/server")).json()
    legacy_response = await client.get("/_matrix/key/v2/server/ed25519:whatever")
    assert legacy_response.status == 200
    assert await legacy_response.json() == current


async def test_federation_version_names_ranvier(client: TestClient[Any, Any]) -> None:
    response = await client.get("/_matrix/federation/v1/version")
    assert response.status == 200
    assert await response.json() == {"server": {"name": "Ranvier", "version": ranvier.__version__}}


async def test_build_app_creates_the_key_file_when_missing(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    config = parse_config({"server_name": "example.org"}, tmp_path, env={})
    assert not config.signing_key_path.exists()
    client = await aiohttp_client(build_app(config))
    assert config.signing_key_path.exists()
    document = await (await client.get("/_matrix/key/v2/server")).json()
    _verify(document, "example.org")
