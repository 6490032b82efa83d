"""federation.trusted_key_servers: the notaries asked for other servers' keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranvier.config import ConfigError, TrustedKeyServer, parse_config
from ranvier.core.signing import encode_base64

KEY = bytes(range(32))


def test_no_notary_by_default(tmp_path: Path) -> None:
    assert parse_config({}, tmp_path, env={}).trusted_key_servers == ()


def test_notaries_from_the_file(tmp_path: Path) -> None:
    raw = {
        "federation": {
            "trusted_key_servers": [
                {
                    "server_name": "notary.example",
                    "verify_keys": {"ed25519:a_1": encode_base64(KEY)},
                },
                {
                    "server_name": "[::1]:8448",
                    "verify_keys": {"ed25519:b": encode_base64(KEY) + "="},
                },
            ]
        }
    }
    assert parse_config(raw, tmp_path, env={}).trusted_key_servers == (
        TrustedKeyServer("notary.example", {"ed25519:a_1": KEY}),
        TrustedKeyServer("[::1]:8448", {"ed25519:b": KEY}),
    )


def test_notaries_from_the_environment(tmp_path: Path) -> None:
    env = {
        "RANVIER_FEDERATION_TRUSTED_KEY_SERVERS": (
            f'[{{server_name: n.example, verify_keys: {{"ed25519:k": "{encode_base64(KEY)}"}}}}]'
        )
    }
    config = parse_config({}, tmp_path, env=env)
    assert config.trusted_key_servers == (TrustedKeyServer("n.example", {"ed25519:k": KEY}),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("matrix.org", "must be a list"),
        ([{"server_name": "n.example"}], "exactly server_name and verify_keys"),
        ([{"server_name": "n.example", "verify_keys": {}, "x": 1}], "exactly server_name"),
        ([{"server_name": "n.example", "verify_keys": {}}], "verify_keys must map"),
        ([{"server_name": "bad name", "verify_keys": {"ed25519:k": "AAAA"}}], "valid server name"),
        ([{"server_name": "n.example", "verify_keys": {"curve:k": "AAAA"}}], "ed25519:<version>"),
        ([{"server_name": "n.example", "verify_keys": {"ed25519:k": "!!"}}], "not unpadded base64"),
        ([{"server_name": "n.example", "verify_keys": {"ed25519:k": 5}}], "not unpadded base64"),
        ([{"server_name": "n.example", "verify_keys": {"ed25519:k": "AAAA"}}], "32-byte"),
    ],
)
def test_bad_notaries_are_reported(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"federation": {"trusted_key_servers": value}}, tmp_path, env={})
    assert "'federation.trusted_key_servers'" in str(error.value)
    assert message in str(error.value)
