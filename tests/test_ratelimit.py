"""Token-bucket rate limiting: bursts, refill, retry_after_ms, switching off."""

from __future__ import annotations

import pytest

from ranvier.config import RateConfig, RateLimitConfig, parse_config
from ranvier.errors import MatrixError
from ranvier.services.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def _limiter(enabled: bool = True) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    config = RateLimitConfig(enabled=enabled, message=RateConfig(per_second=2, burst=3))
    return RateLimiter(config, clock), clock


def test_burst_then_limited_with_retry_after() -> None:
    limiter, _clock = _limiter()
    for _ in range(3):
        limiter.check("message", "@a:x")
    with pytest.raises(MatrixError) as caught:
        limiter.check("message", "@a:x")
    assert caught.value.status == 429
    assert caught.value.errcode == "M_LIMIT_EXCEEDED"
    assert caught.value.extra == {"retry_after_ms": 500}


def test_keys_and_actions_have_separate_buckets() -> None:
    limiter, _clock = _limiter()
    for _ in range(3):
        limiter.check("message", "@a:x")
    limiter.check("message", "@b:x")
    limiter.check("login", "@a:x")


def test_bucket_refills_over_time() -> None:
    limiter, clock = _limiter()
    for _ in range(3):
        limiter.check("message", "@a:x")
    clock.now += 499
    with pytest.raises(MatrixError):
        limiter.check("message", "@a:x")
    clock.now += 1
    limiter.check("message", "@a:x")


def test_disabled_never_limits() -> None:
    limiter, _clock = _limiter(enabled=False)
    for _ in range(100):
        limiter.check("message", "@a:x")


def test_eviction_keeps_only_buckets_that_carry_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ranvier.services.ratelimit.MAX_BUCKETS", 2)
    limiter, clock = _limiter()
    limiter.check("message", "@a:x")
    limiter.check("message", "@b:x")
    clock.now += 10_000  # both refilled
    limiter.check("message", "@c:x")
    assert set(limiter._buckets) == {("message", "@c:x")}


def test_config_and_environment(tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    config = parse_config(
        {"ratelimit": {"message": {"per_second": 5, "burst": 20}}},
        base,
        env={"RANVIER_RATELIMIT_ENABLED": "false", "RANVIER_RATELIMIT_LOGIN_BURST": "7"},
    )
    assert config.ratelimit.enabled is False
    assert config.ratelimit.message == RateConfig(5.0, 20)
    assert config.ratelimit.login.burst == 7
    assert config.ratelimit.registration == RateLimitConfig().registration
