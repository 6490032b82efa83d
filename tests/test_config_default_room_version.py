"""``default_room_version`` (Synapse's name): validated against the known room
versions, from YAML or RANVIER_DEFAULT_ROOM_VERSION."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranvier.config import ConfigError, parse_config


def test_defaults_to_version_12(tmp_path: Path) -> None:
    assert parse_config({}, tmp_path, env={}).default_room_version == "12"


@pytest.mark.parametrize(("raw", "expected"), [("10", "10"), (9, "9"), ("1", "1")])
def test_yaml_string_or_number(tmp_path: Path, raw: object, expected: str) -> None:
    config = parse_config({"default_room_version": raw}, tmp_path, env={})
    assert config.default_room_version == expected


def test_environment_overrides_yaml(tmp_path: Path) -> None:
    config = parse_config(
        {"default_room_version": "10"}, tmp_path, env={"RANVIER_DEFAULT_ROOM_VERSION": "11"}
    )
    assert config.default_room_version == "11"


@pytest.mark.parametrize("raw", ["13", "org.example.custom", "", True, 10.5, ["10"]])
def test_unknown_versions_are_refused(tmp_path: Path, raw: object) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"default_room_version": raw}, tmp_path, env={})
    assert "'default_room_version'" in str(error.value)
