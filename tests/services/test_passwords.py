"""PasswordHasher: parameters, old hashes, unknown users, and the bound on concurrent hashes."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import argon2
import pytest

from ranvier.config import (
    ARGON2_PARALLELISM,
    DEFAULT_ARGON2_MEMORY_COST_KIB,
    DEFAULT_ARGON2_TIME_COST,
    DEFAULT_MAX_CONCURRENT_HASHES,
    ConfigError,
    PasswordHashingConfig,
    parse_config,
)
from ranvier.services.passwords import PasswordHasher

CHEAP = PasswordHashingConfig(time_cost=1, memory_cost=32, max_concurrent=1)


def test_defaults_are_at_least_owasps_minimum() -> None:
    # OWASP Password Storage Cheat Sheet: argon2id, m >= 19 MiB, t >= 2, p = 1.
    assert DEFAULT_ARGON2_MEMORY_COST_KIB >= 19 * 1024
    assert DEFAULT_ARGON2_TIME_COST >= 2
    assert ARGON2_PARALLELISM == 1
    assert DEFAULT_MAX_CONCURRENT_HASHES == 1


def test_max_concurrent_is_configurable(tmp_path: Path) -> None:
    config = parse_config({"password_hashing": {"max_concurrent": 3}}, tmp_path, env={})
    assert config.password_hashing.max_concurrent == 3
    config = parse_config(None, tmp_path, env={"RANVIER_PASSWORD_HASHING_MAX_CONCURRENT": "2"})
    assert config.password_hashing.max_concurrent == 2
    with pytest.raises(ConfigError, match=r"password_hashing\.max_concurrent"):
        parse_config({"password_hashing": {"max_concurrent": 0}}, tmp_path, env={})


async def test_hash_verifies_and_wrong_password_does_not() -> None:
    hasher = PasswordHasher(CHEAP)
    try:
        hashed = await hasher.hash("correct horse")
        assert hashed.startswith("$argon2id$v=19$m=32,t=1,p=1$")
        assert await hasher.verify("correct horse", hashed)
        assert not await hasher.verify("wrong horse", hashed)
        assert not hasher.needs_rehash(hashed)
    finally:
        hasher.close()


async def test_unknown_user_never_matches() -> None:
    hasher = PasswordHasher(CHEAP)
    try:
        assert not await hasher.verify("anything", None)
    finally:
        hasher.close()


async def test_hash_with_other_parameters_verifies_and_needs_rehash() -> None:
    # A hash made with the former defaults' shape (more lanes, other costs).
    old = argon2.PasswordHasher(time_cost=3, memory_cost=64, parallelism=4).hash("old password")
    hasher = PasswordHasher(CHEAP)
    try:
        assert await hasher.verify("old password", old)
        assert hasher.needs_rehash(old)
    finally:
        hasher.close()


@pytest.mark.parametrize("limit", [1, 2])
async def test_at_most_max_concurrent_hashes_run_at_once(limit: int) -> None:
    hasher = PasswordHasher(
        PasswordHashingConfig(time_cost=1, memory_cost=32, max_concurrent=limit)
    )
    running = 0
    most = 0
    lock = threading.Lock()
    real_hash = hasher._hash

    def counting_hash(password: str) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.01)  # let the others pile up
            return real_hash(password)
        finally:
            with lock:
                running -= 1

    hasher._hash = counting_hash  # type: ignore[method-assign]
    try:
        hashes = await asyncio.gather(*(hasher.hash(f"password {i}") for i in range(6)))
        assert len(set(hashes)) == 6
        assert most == limit
    finally:
        hasher.close()
