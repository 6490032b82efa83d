"""Configuration: defaults, YAML, RANVIER_* environment overrides, errors, key files."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from ranvier.config import (
    ENV_VARS,
    Config,
    ConfigError,
    FederationConfig,
    ListenConfig,
    MetricsConfig,
    TlsListenConfig,
    WellKnownConfig,
    env_var_name,
    load_config,
    load_or_create_signing_key,
    parse_config,
    read_signing_key,
    write_signing_key,
)
from ranvier.core.signing import SigningKey


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults -------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path, env={})
    assert config == Config(
        config_dir=tmp_path.resolve(),
        server_name="localhost",
        listen=ListenConfig(host="127.0.0.1", port=8008, x_forwarded=False),
        database=f"sqlite:///{tmp_path.resolve()}/data/homeserver.db",
        signing_key_path=tmp_path.resolve() / "localhost.signing.key",
        well_known=WellKnownConfig(client_base_url=None, server=None),
        key_valid_for=7 * 24 * 60 * 60 * 1000,
        log_level="INFO",
    )
    assert config.sqlite_path == tmp_path.resolve() / "data" / "homeserver.db"


def test_slow_client_limits_default_and_parse(tmp_path: Path) -> None:
    listen = parse_config({}, tmp_path, env={}).listen
    assert (listen.header_timeout, listen.body_timeout, listen.idle_timeout) == (
        30_000,
        60_000,
        180_000,
    )
    listen = parse_config(
        {"listen": {"header_timeout": "5s", "body_timeout": 250, "idle_timeout": "2m"}},
        tmp_path,
        env={"RANVIER_LISTEN_MAX_CONNECTIONS_PER_IP": "17"},
    ).listen
    assert (listen.header_timeout, listen.body_timeout, listen.idle_timeout) == (
        5_000,
        250,
        120_000,
    )
    assert (listen.max_connections_per_ip, listen.connection_cap) == (17, 17)


@pytest.mark.parametrize(
    ("listen", "cap"),
    [
        ({}, 200),  # clients connect directly: a generous cap per address
        ({"x_forwarded": True}, None),  # behind a proxy every connection is the proxy's
        ({"x_forwarded": True, "max_connections_per_ip": 1000}, 1000),
        ({"max_connections_per_ip": 0}, None),  # 0: no limit
        ({"max_connections_per_ip": 3}, 3),
    ],
)
def test_connection_cap_per_address(
    tmp_path: Path, listen: dict[str, object], cap: int | None
) -> None:
    assert parse_config({"listen": listen}, tmp_path, env={}).listen.connection_cap == cap


def test_default_signing_key_file_follows_the_server_name(tmp_path: Path) -> None:
    config = parse_config({"server_name": "example.org:8448"}, tmp_path, env={})
    assert config.signing_key_path == tmp_path.resolve() / "example.org_8448.signing.key"


def test_null_sections_and_keys_mean_defaults(tmp_path: Path) -> None:
    config = parse_config({"well_known": None, "listen": {"port": None}}, tmp_path, env={})
    assert config.listen.port == 8008
    assert config.well_known == WellKnownConfig()


# --- YAML -----------------------------------------------------------------------------


def test_load_yaml_with_paths_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = _write(
        tmp_path / "etc" / "ranvier.yaml",
        """
server_name: example.org
listen:
  host: 0.0.0.0
  port: 8448
  x_forwarded: yes
database: sqlite:///db/home.db
signing_key_path: keys/example.key
well_known:
  client_base_url: https://matrix.example.org
  server: matrix.example.org:443
key_valid_for: 2d
log_level: debug
""",
    )
    monkeypatch.chdir(tmp_path)  # a cwd other than the config folder
    config = load_config(Path("etc/ranvier.yaml"), env={})
    etc = config_path.parent.resolve()
    assert config.config_dir == etc
    assert config.server_name == "example.org"
    assert config.listen == ListenConfig(host="0.0.0.0", port=8448, x_forwarded=True)
    assert config.database == f"sqlite:///{etc}/db/home.db"
    assert config.signing_key_path == etc / "keys" / "example.key"
    assert config.well_known == WellKnownConfig(
        client_base_url="https://matrix.example.org", server="matrix.example.org:443"
    )
    assert config.key_valid_for == 2 * 86_400_000
    assert config.log_level == "DEBUG"


def test_absolute_paths_and_postgres_urls_are_kept(tmp_path: Path) -> None:
    raw = {"database": "postgresql://ranvier:pw@db:5432/ranvier", "signing_key_path": "/k/s.key"}
    config = parse_config(raw, tmp_path, env={})
    assert config.database == "postgresql://ranvier:pw@db:5432/ranvier"
    assert config.sqlite_path is None
    assert config.signing_key_path == Path("/k/s.key")
    absolute = parse_config({"database": "sqlite:////var/lib/r.db"}, tmp_path, env={})
    assert absolute.database == "sqlite:////var/lib/r.db"
    assert absolute.sqlite_path == Path("/var/lib/r.db")


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "ranvier.yaml", "# nothing\n"), env={})
    assert config.server_name == "localhost"


@pytest.mark.parametrize(
    ("value", "milliseconds"),
    [(1000, 1000), ("1500ms", 1500), ("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000),
     ("7d", 604_800_000), ("1w", 604_800_000), ("42", 42)],
)
def test_key_valid_for_accepts_milliseconds_and_units(
    tmp_path: Path, value: object, milliseconds: int
) -> None:
    assert parse_config({"key_valid_for": value}, tmp_path, env={}).key_valid_for == milliseconds


# --- environment ----------------------------------------------------------------------


def test_env_var_names_are_upper_snake_key_paths() -> None:
    assert env_var_name("server_name") == "RANVIER_SERVER_NAME"
    assert env_var_name("well_known.client_base_url") == "RANVIER_WELL_KNOWN_CLIENT_BASE_URL"
    assert set(ENV_VARS) >= {
        "RANVIER_SERVER_NAME",
        "RANVIER_LISTEN_HOST",
        "RANVIER_LISTEN_PORT",
        "RANVIER_LISTEN_X_FORWARDED",
        "RANVIER_DATABASE",
        "RANVIER_SIGNING_KEY_PATH",
        "RANVIER_WELL_KNOWN_CLIENT_BASE_URL",
        "RANVIER_WELL_KNOWN_SERVER",
        "RANVIER_KEY_VALID_FOR",
        "RANVIER_LOG_LEVEL",
    }


def test_every_key_is_documented_with_its_environment_variable() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    missing = sorted(name for name in ENV_VARS if f"`{name}`" not in docs)
    assert missing == []


def test_env_overrides_yaml_including_nested_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ranvier.yaml",
        "server_name: from.yaml\nlisten:\n  host: 127.0.0.1\n  port: 8008\n",
    )
    config = load_config(
        path,
        env={
            "RANVIER_SERVER_NAME": "from.env",
            "RANVIER_LISTEN_PORT": "9009",
            "RANVIER_LISTEN_X_FORWARDED": "true",
            "RANVIER_WELL_KNOWN_CLIENT_BASE_URL": "https://m.from.env",
            "RANVIER_WELL_KNOWN_SERVER": "m.from.env:443",
            "RANVIER_DATABASE": "sqlite:///other.db",
            "RANVIER_KEY_VALID_FOR": "3600000",
            "PATH": "/usr/bin",
        },
    )
    assert config.server_name == "from.env"
    assert config.listen == ListenConfig(host="127.0.0.1", port=9009, x_forwarded=True)
    assert config.well_known.client_base_url == "https://m.from.env"
    assert config.well_known.server == "m.from.env:443"
    assert config.database == f"sqlite:///{tmp_path.resolve()}/other.db"
    assert config.key_valid_for == 3_600_000


def test_env_values_parse_as_yaml_scalars(tmp_path: Path) -> None:
    config = parse_config(
        {}, tmp_path, env={"RANVIER_LISTEN_PORT": "8448", "RANVIER_LISTEN_X_FORWARDED": "false"}
    )
    assert config.listen.port == 8448
    assert config.listen.x_forwarded is False


def test_env_values_of_string_keys_are_taken_literally(tmp_path: Path) -> None:
    # As YAML, "yes" would be a boolean; a server name is a string whatever it looks like.
    config = parse_config({}, tmp_path, env={"RANVIER_SERVER_NAME": "yes"})
    assert config.server_name == "yes"


def test_empty_env_value_means_default(tmp_path: Path) -> None:
    config = parse_config(
        {"well_known": {"server": "m.example.org"}, "listen": {"port": 1234}},
        tmp_path,
        env={"RANVIER_WELL_KNOWN_SERVER": "", "RANVIER_LISTEN_PORT": ""},
    )
    assert config.well_known.server is None
    assert config.listen.port == 8008


def test_unknown_ranvier_env_var_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ranvier.config"):
        config = parse_config(
            {}, tmp_path, env={"RANVIER_LISTEN_PROT": "1", "RANVIER_CONFIG": "x.yaml"}
        )
    assert config.listen.port == 8008
    assert "RANVIER_LISTEN_PROT" in caplog.text
    assert "RANVIER_CONFIG" not in caplog.text  # the command line's own variable


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({"listen": {"prot": 1}}, {}, "unknown key 'listen.prot' (did you mean 'listen.port'?)"),
        ({"servername": "x"}, {}, "unknown key 'servername' (did you mean 'server_name'?)"),
        ({"listen": 8008}, {}, "'listen' must be a mapping"),
        ({"listen": {"port": "http"}}, {}, "'listen.port': must be a port number"),
        ({"listen": {"port": 70000}}, {}, "must be a port number between 0 and 65535"),
        ({"listen": {"port": True}}, {}, "must be a port number"),
        ({"listen": {"x_forwarded": "maybe"}}, {}, "must be true or false"),
        ({}, {"RANVIER_LISTEN_PORT": "abc"}, "environment variable RANVIER_LISTEN_PORT: must be"),
        ({}, {"RANVIER_LISTEN_PORT": "[1"}, "RANVIER_LISTEN_PORT: '[1' is not a valid value"),
        ({"server_name": "bad name!"}, {}, "is not a valid server name"),
        ({"server_name": "example.org:99999"}, {}, "port outside 1-65535"),
        # As the identifier grammar (Appendices, "Server Name"), which every user ID follows.
        ({"server_name": "ex..org"}, {}, "is not a valid server name"),
        ({"server_name": "example.org."}, {}, "is not a valid server name"),
        ({"server_name": "1.2.3.999:8448"}, {}, "is not a valid server name"),
        ({"server_name": 12}, {}, "must be a non-empty string"),
        ({"database": "mysql://x"}, {}, "must be sqlite:///PATH or postgresql://"),
        ({"database": "sqlite:///"}, {}, "needs a file path"),
        ({"well_known": {"client_base_url": "matrix.example.org"}}, {}, "http:// or https://"),
        ({"key_valid_for": "forever"}, {}, "'key_valid_for': must be milliseconds"),
        ({"key_valid_for": 0}, {}, "must be positive"),
        ({"log_level": "loud"}, {}, "must be one of DEBUG"),
        ({"listen": {"header_timeout": 0}}, {}, "'listen.header_timeout': must be positive"),
        ({"listen": {"body_timeout": "soon"}}, {}, "'listen.body_timeout': must be milliseconds"),
        ({"listen": {"idle_timeout": -5}}, {}, "'listen.idle_timeout': must be positive"),
        ({"listen": {"max_connections_per_ip": -1}}, {}, "must be a whole number, 0 or more"),
        ({"listen": {"max_connections_per_ip": 1.5}}, {}, "must be a whole number, 0 or more"),
    ],
)
def test_bad_values_are_reported_clearly(
    tmp_path: Path, raw: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, tmp_path, env=env)
    assert message in str(error.value)


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.yaml", "server_name: 'a b'\nlisten:\n  port: -1\nfoo: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    text = str(error.value)
    assert "'server_name'" in text
    assert "'listen.port'" in text
    assert "unknown key 'foo'" in text
    assert str(path) in text


def test_missing_config_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist .*ranvier init"):
        load_config(tmp_path / "missing.yaml", env={})


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path / "r.yaml", "listen: [\n"), env={})


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path / "r.yaml", "- a\n- b\n"), env={})


# --- signing key files ---------------------------------------------------------------


def test_signing_key_file_round_trips_owner_only(tmp_path: Path) -> None:
    key = SigningKey.generate("a_Test")
    path = tmp_path / "keys" / "s.key"
    write_signing_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("ed25519 a_Test ")
    assert read_signing_key(path) == key


def test_load_or_create_generates_once_then_reuses(tmp_path: Path) -> None:
    path = tmp_path / "s.key"
    first = load_or_create_signing_key(path)
    assert first.version.startswith("a_")
    assert load_or_create_signing_key(path) == first


@pytest.mark.parametrize("content", ["", "ed25519 v1\n", "rsa v1 AAAA\n", "ed25519 v1 AAAA\n"])
def test_bad_signing_key_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path / "s.key", content)
    with pytest.raises(ConfigError, match="signing key file"):
        read_signing_key(path)


# --- federation ---------------------------------------------------------------------


def test_federation_defaults_no_tls_listener_and_the_ssrf_guard_on(tmp_path: Path) -> None:
    federation = parse_config({}, tmp_path, env={}).federation
    assert federation == FederationConfig(
        tls_listen=TlsListenConfig(
            host="0.0.0.0", port=None, certificate_path=None, private_key_path=None,
            serve_client_api=False,
        ),
        trusted_ca_file=None,
        allow_private_addresses=False,
        request_timeout=60_000,
        max_response_size=100 * 1024 * 1024,
    )  # fmt: skip


def test_federation_keys_from_yaml_and_env_with_relative_paths(tmp_path: Path) -> None:
    config = parse_config(
        {
            "federation": {
                "tls_listen": {
                    "port": 8448,
                    "certificate_path": "tls/chain.pem",
                    "private_key_path": "/etc/tls/key.pem",
                },
                "trusted_ca_file": "ca.pem",
            }
        },
        tmp_path,
        env={
            "RANVIER_FEDERATION_TLS_LISTEN_HOST": "::",
            "RANVIER_FEDERATION_TLS_LISTEN_SERVE_CLIENT_API": "true",
            "RANVIER_FEDERATION_ALLOW_PRIVATE_ADDRESSES": "true",
            "RANVIER_FEDERATION_REQUEST_TIMEOUT": "30s",
            "RANVIER_FEDERATION_MAX_RESPONSE_SIZE": "1048576",
        },
    )
    base = tmp_path.resolve()
    assert config.federation == FederationConfig(
        tls_listen=TlsListenConfig(
            host="::", port=8448, certificate_path=base / "tls" / "chain.pem",
            private_key_path=Path("/etc/tls/key.pem"), serve_client_api=True,
        ),
        trusted_ca_file=base / "ca.pem",
        allow_private_addresses=True,
        request_timeout=30_000,
        max_response_size=1_048_576,
    )  # fmt: skip


def test_a_tls_port_needs_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs 'federation\.tls_listen\.certificate_path'"):
        parse_config({"federation": {"tls_listen": {"port": 8448}}}, tmp_path, env={})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"federation": {"allow_private_addresses": "yes"}}, "must be true or false"),
        ({"federation": {"max_response_size": 0}}, "must be a positive integer"),
        ({"federation": {"tls_listen": "8448"}}, "must be a mapping of keys"),
        ({"federation": {"tls_listn": {}}}, "did you mean 'federation.tls_listen'"),
    ],
)
def test_bad_federation_values_are_reported(
    tmp_path: Path, raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, tmp_path, env={})


# --- metrics ------------------------------------------------------------------------


def test_metrics_listener_is_off_by_default_on_loopback_port_9000(tmp_path: Path) -> None:
    assert parse_config({}, tmp_path, env={}).metrics == MetricsConfig(
        enabled=False, listen_host="127.0.0.1", listen_port=9000
    )


def test_metrics_keys_from_yaml_and_env(tmp_path: Path) -> None:
    config = parse_config(
        {"metrics": {"enabled": True, "listen_port": 9100}},
        tmp_path,
        env={"RANVIER_METRICS_LISTEN_HOST": "::1", "RANVIER_METRICS_LISTEN_PORT": "9101"},
    )
    assert config.metrics == MetricsConfig(enabled=True, listen_host="::1", listen_port=9101)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"metrics": {"enabled": "yes"}}, "'metrics.enabled': must be true or false"),
        ({"metrics": {"listen_port": 70000}}, "'metrics.listen_port': must be a port number"),
        ({"metrics": {"listen_port": "9000"}}, "'metrics.listen_port': must be a port number"),
        ({"metrics": {"port": 9000}}, "did you mean 'metrics.listen_port'"),
        ({"metrics": True}, "'metrics' must be a mapping of keys"),
    ],
)
def test_bad_metrics_values_are_reported(
    tmp_path: Path, raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, tmp_path, env={})
