"""`ranvier user create` and `ranvier registration-token create`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from ranvier.cli import cli
from ranvier.config import load_config
from ranvier.storage import open_database
from ranvier.storage.accounts import AccountsStore, RegistrationTokenRow, UserRow


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "ranvier.yaml"
    path.write_text(
        'server_name: "example.org"\n'
        'database: "sqlite:///data/hs.db"\n'
        "password_hashing: {time_cost: 1, memory_cost: 32}\n",
        encoding="utf-8",
    )
    return path


def _user(config_path: Path, user_id: str) -> UserRow | None:
    async def read() -> UserRow | None:
        db = await open_database(load_config(config_path, env={}).database)
        try:
            return await AccountsStore(db).get_user(user_id)
        finally:
            await db.close()

    return asyncio.run(read())


def _token(config_path: Path, token: str) -> RegistrationTokenRow | None:
    async def read() -> RegistrationTokenRow | None:
        db = await open_database(load_config(config_path, env={}).database)
        try:
            return await AccountsStore(db).get_registration_token(token)
        finally:
            await db.close()

    return asyncio.run(read())


def test_user_create_admin_with_password(config_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["user", "create", "alice", "--admin", "--password", "pw", "--config", str(config_path)]
    )
    assert result.exit_code == 0, result.output
    assert "@alice:example.org" in result.output
    user = _user(config_path, "@alice:example.org")
    assert user is not None and user.is_admin and not user.is_guest
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")


def test_user_create_prompts_for_the_password(config_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["user", "create", "@bob:example.org", "--config", str(config_path)], input="pw\npw\n"
    )
    assert result.exit_code == 0, result.output
    user = _user(config_path, "@bob:example.org")
    assert user is not None and not user.is_admin


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Alice", "--password", "pw"], "can only contain"),
        (["@alice:other.org", "--password", "pw"], "not a user of this server"),
        (["alice", "--password", ""], "must not be empty"),
    ],
)
def test_user_create_errors(config_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["user", "create", *args, "--config", str(config_path)])
    assert result.exit_code != 0
    assert message in result.output


def test_user_create_refuses_a_taken_name(config_path: Path) -> None:
    args = ["user", "create", "alice", "--password", "pw", "--config", str(config_path)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "already taken" in result.output


def test_registration_token_create(config_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["registration-token", "create", "--token", "abc", "--uses", "3", "--expires", "1h", "--config", str(config_path)],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "abc"
    row = _token(config_path, "abc")
    assert row is not None and row.uses_allowed == 3 and row.expiry_time is not None
    # Again: it exists.
    result = CliRunner().invoke(
        cli, ["registration-token", "create", "--token", "abc", "--config", str(config_path)]
    )
    assert result.exit_code == 1 and "exists already" in result.output


def test_registration_token_create_random(config_path: Path) -> None:
    result = CliRunner().invoke(cli, ["registration-token", "create", "--config", str(config_path)])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert len(token) == 16
    row = _token(config_path, token)
    assert row == RegistrationTokenRow(token, None, 0, 0, None)


@pytest.mark.parametrize(
    "args", [["--token", "bad token"], ["--token", "x" * 65], ["--expires", "soon"], ["--uses", "0"]]
)
def test_registration_token_create_errors(config_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(
        cli, ["registration-token", "create", *args, "--config", str(config_path)]
    )
    assert result.exit_code != 0
