"""The push.* config keys (HTTP pushers and their delivery)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranvier.config import ConfigError, PushConfig, parse_config


def test_push_defaults_https_only_ssrf_guard_on_synapse_like_backoff(tmp_path: Path) -> None:
    assert parse_config({}, tmp_path, env={}).push == PushConfig(
        allow_http_gateways=False,
        allow_private_addresses=False,
        request_timeout=10_000,
        retry_initial_delay=1_000,
        retry_max_delay=3_600_000,
        give_up_after=86_400_000,
    )


def test_push_keys_from_yaml_and_env(tmp_path: Path) -> None:
    config = parse_config(
        {"push": {"allow_http_gateways": True, "request_timeout": "5s", "retry_max_delay": "10m"}},
        tmp_path,
        env={
            "RANVIER_PUSH_ALLOW_PRIVATE_ADDRESSES": "true",
            "RANVIER_PUSH_RETRY_INITIAL_DELAY": "20",
            "RANVIER_PUSH_GIVE_UP_AFTER": "2h",
        },
    )
    assert config.push == PushConfig(
        allow_http_gateways=True,
        allow_private_addresses=True,
        request_timeout=5_000,
        retry_initial_delay=20,
        retry_max_delay=600_000,
        give_up_after=7_200_000,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"allow_http_gateways": "yes"}, "'push.allow_http_gateways': must be true or false"),
        ({"request_timeout": 0}, "'push.request_timeout': must be positive"),
        ({"retry_max_delay": "soon"}, "'push.retry_max_delay': must be milliseconds"),
        ({"unknown": 1}, "unknown key 'push.unknown'"),
    ],
)
def test_bad_push_values_are_reported(tmp_path: Path, raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"push": raw}, tmp_path, env={})
