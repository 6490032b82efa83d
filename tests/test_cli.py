"""The `ranvier` command line: init and serve's failure modes (serving itself is in e2e)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

import ranvier
from ranvier.cli import cli
from ranvier.config import load_config, read_signing_key


def test_init_writes_a_loadable_config_a_key_and_the_data_folder(tmp_path: Path) -> None:
    config_path = tmp_path / "ranvier.yaml"
    result = CliRunner().invoke(cli, ["init", "--config", str(config_path)])
    assert result.exit_code == 0, result.output
    config = load_config(config_path, env={})
    assert config.server_name == "localhost"
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8008)
    assert config.database == f"sqlite:///{tmp_path.resolve()}/data/homeserver.db"
    assert config.signing_key_path == tmp_path.resolve() / "localhost.signing.key"
    assert config.key_valid_for == 7 * 86_400_000
    assert (tmp_path / "data").is_dir()
    key = read_signing_key(config.signing_key_path)
    assert key.key_id.startswith("ed25519:a_")
    assert len(key.version) == 6
    assert key.key_id in result.output
    # Commented, so people can read what they got.
    text = config_path.read_text()
    assert text.startswith("# Ranvier homeserver configuration")
    assert "RANVIER_LISTEN_PORT" in text
    assert yaml.safe_load(text)["signing_key_path"] == "localhost.signing.key"


def test_init_with_server_name(tmp_path: Path) -> None:
    config_path = tmp_path / "conf" / "hs.yaml"
    result = CliRunner().invoke(
        cli, ["init", "--config", str(config_path), "--server-name", "example.org"]
    )
    assert result.exit_code == 0, result.output
    config = load_config(config_path, env={})
    assert config.server_name == "example.org"
    assert config.signing_key_path == (tmp_path / "conf" / "example.org.signing.key").resolve()
    assert config.signing_key_path.exists()
    assert (tmp_path / "conf" / "data").is_dir()


def test_init_generates_different_keys_for_different_servers(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["init", "--config", str(tmp_path / "a" / "r.yaml")])
    runner.invoke(cli, ["init", "--config", str(tmp_path / "b" / "r.yaml")])
    key_a = read_signing_key(tmp_path / "a" / "localhost.signing.key")
    key_b = read_signing_key(tmp_path / "b" / "localhost.signing.key")
    assert key_a.seed != key_b.seed


def test_init_refuses_to_overwrite_an_existing_config(tmp_path: Path) -> None:
    config_path = tmp_path / "ranvier.yaml"
    config_path.write_text("server_name: mine.example\n")
    result = CliRunner().invoke(cli, ["init", "--config", str(config_path)])
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert "--force" in result.output
    assert config_path.read_text() == "server_name: mine.example\n"
    assert not (tmp_path / "localhost.signing.key").exists()


def test_init_force_overwrites_the_config_but_keeps_the_key(tmp_path: Path) -> None:
    config_path = tmp_path / "ranvier.yaml"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--config", str(config_path)]).exit_code == 0
    key_before = read_signing_key(tmp_path / "localhost.signing.key")
    config_path.write_text("garbage: true\n")
    result = runner.invoke(cli, ["init", "--config", str(config_path), "--force"])
    assert result.exit_code == 0, result.output
    assert "Keeping the existing signing key" in result.output
    assert load_config(config_path, env={}).server_name == "localhost"
    assert read_signing_key(tmp_path / "localhost.signing.key") == key_before


def test_init_rejects_an_invalid_server_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["init", "--config", str(tmp_path / "r.yaml"), "--server-name", "not valid"]
    )
    assert result.exit_code == 2
    assert "not a valid server name" in result.output
    assert not (tmp_path / "r.yaml").exists()


def test_serve_with_a_bad_config_exits_2_with_a_message_and_no_traceback(
    tmp_path: Path,
) -> None:
    config_path = tmp_path / "ranvier.yaml"
    config_path.write_text("listen:\n  port: eighty\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config_path)])
    assert result.exit_code == 2
    assert "'listen.port': must be a port number" in result.output
    assert "Traceback" not in result.output


def test_serve_with_a_missing_config_exits_2_and_suggests_init(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "ranvier init" in result.output


def test_serve_with_a_bad_key_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("not a key\n")
    config_path = tmp_path / "ranvier.yaml"
    config_path.write_text("signing_key_path: bad.key\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config_path)])
    assert result.exit_code == 2
    assert "signing key file" in result.output


def test_serve_with_unusable_tls_listener_files_exits_2(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    config_path = tmp_path / "ranvier.yaml"
    config_path.write_text(
        "federation:\n  tls_listen:\n    port: 8448\n"
        "    certificate_path: cert.pem\n    private_key_path: missing-key.pem\n"
    )
    result = CliRunner().invoke(cli, ["serve", "--config", str(config_path)])
    assert result.exit_code == 2
    assert "federation.tls_listen: cannot load the certificate" in result.output
    assert "Traceback" not in result.output


def test_serve_with_a_missing_trusted_ca_file_exits_2(tmp_path: Path) -> None:
    config_path = tmp_path / "ranvier.yaml"
    config_path.write_text("federation:\n  trusted_ca_file: nope.pem\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config_path)])
    assert result.exit_code == 2
    assert "federation.trusted_ca_file: cannot load" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ranvier", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"ranvier, version {ranvier.__version__}"
