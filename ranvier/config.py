"""Typed configuration: a YAML file, overridable key by key from the environment.

Every key has a documented default (docs/configuration.md). A key ``a.b_c`` is
overridden by the environment variable ``RANVIER_A_B_C``; its value is read as
a YAML scalar (so ``true`` and ``8008`` work), except for string keys, which
take the text as it is (so ``RANVIER_SERVER_NAME=yes`` is not a boolean). An
empty value, like a ``null`` in the file, means "use the default".

Relative paths are resolved against the folder of the config file. Any problem
becomes a :class:`ConfigError` that lists every bad key with where it came from.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ranvier.core.ids import InvalidIdentifier, UserID
from ranvier.core.ids import parse_server_name as parse_identifier_server_name
from ranvier.core.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from ranvier.core.signing import SigningKey, decode_base64

logger = logging.getLogger(__name__)

ENV_PREFIX = "RANVIER_"
DEFAULT_CONFIG_PATH = "ranvier.yaml"
DEFAULT_DATABASE = "sqlite:///data/homeserver.db"
DEFAULT_KEY_VALID_FOR_MS = 7 * 24 * 60 * 60 * 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """The configuration is unusable; the message says why, for a human."""


# Slow-client protection (issue 9): defaults in milliseconds, see docs/configuration.md.
DEFAULT_HEADER_TIMEOUT_MS = 30_000
DEFAULT_BODY_TIMEOUT_MS = 60_000
# Longer than the idle timeout reverse proxies use for their upstream connections
# (nginx 60 s, Go's http.Transport 90 s), so the proxy, not Ranvier, closes an
# idle pooled connection and never sends a request into one being closed.
DEFAULT_IDLE_TIMEOUT_MS = 180_000
# Per TCP peer address when clients connect directly; see ListenConfig.connection_cap.
DEFAULT_MAX_CONNECTIONS_PER_IP = 200


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 8008
    # Behind a reverse proxy: take the client's address from X-Forwarded-For.
    x_forwarded: bool = False
    # A request's line and headers must arrive within this many ms of its first byte
    # (of the connection, for a new one).
    header_timeout: int = DEFAULT_HEADER_TIMEOUT_MS
    # Longest silence while a request body is being received, in ms.
    body_timeout: int = DEFAULT_BODY_TIMEOUT_MS
    # An idle keep-alive connection is closed after this many ms.
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT_MS
    # Open connections per TCP peer address; 0: no limit; None: see connection_cap.
    max_connections_per_ip: int | None = None

    @property
    def connection_cap(self) -> int | None:
        """The per-address connection limit in force, None for none.

        Unset, it is DEFAULT_MAX_CONNECTIONS_PER_IP for direct clients but none
        behind a reverse proxy (``x_forwarded``): there every connection comes
        from the proxy, and a cap would throttle its pooled connections instead
        of an attacker (the proxy is the place to limit clients).
        """
        if self.max_connections_per_ip is None:
            return None if self.x_forwarded else DEFAULT_MAX_CONNECTIONS_PER_IP
        return self.max_connections_per_ip or None


@dataclass(frozen=True)
class WellKnownConfig:
    # Served as {"m.homeserver": {"base_url": ...}} at /.well-known/matrix/client.
    client_base_url: str | None = None
    # Served as {"m.server": ...} at /.well-known/matrix/server (delegation).
    server: str | None = None
    # Served at /.well-known/matrix/support (v1.10) when either is set.
    support_page: str | None = None
    support_contacts: tuple[dict[str, str], ...] = ()


#: Who may publish a room in the directory (PUT /directory/list/room/{roomId}).
DIRECTORY_PUBLISH_RULES = ("room_admins", "joined_members", "server_admins")


@dataclass(frozen=True)
class DirectoryConfig:
    # room_admins: joined with the power to send m.room.canonical_alias (Synapse's
    # rule); joined_members: any joined member; server_admins: server admins only
    # (also for createRoom with visibility=public). Server admins always may.
    publish_rule: str = "room_admins"


@dataclass(frozen=True)
class RateConfig:
    """A token bucket: ``burst`` actions at once, refilled at ``per_second``."""

    per_second: float
    burst: int


@dataclass(frozen=True)
class RateLimitConfig:
    enabled: bool = True
    # Defaults as Synapse's rc_message, rc_login and rc_registration.
    message: RateConfig = field(default_factory=lambda: RateConfig(0.2, 10))
    login: RateConfig = field(default_factory=lambda: RateConfig(0.17, 3))
    registration: RateConfig = field(default_factory=lambda: RateConfig(0.17, 3))


@dataclass(frozen=True)
class RegistrationConfig:
    # POST /register for everyone; closed by default (create accounts with `ranvier user create`).
    enabled: bool = False
    # Registration needs a registration token (`ranvier registration-token create`).
    require_token: bool = False
    # POST /register?kind=guest.
    guest_access: bool = False


@dataclass(frozen=True)
class UserDirectoryConfig:
    # POST /user_directory/search finds every local user, not only those who
    # share a room with the searcher or are in a public room (Synapse's
    # user_directory.search_all_users).
    search_all_users: bool = False


# argon2id with the first configuration the OWASP Password Storage Cheat Sheet
# recommends (https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html#argon2id):
# m=19 MiB, t=2, p=1. Its listed alternatives (m=46 MiB t=1, m=12 MiB t=3,
# m=9 MiB t=4, m=7 MiB t=5; all p=1) are equally strong; 19 MiB keeps memory
# per hash small (a server hashes on every registration and login) while
# staying memory-hard. One lane: a hash occupies one CPU core, not four.
DEFAULT_ARGON2_TIME_COST = 2
DEFAULT_ARGON2_MEMORY_COST_KIB = 19 * 1024
ARGON2_PARALLELISM = 1
# Hashes computed at the same time; further requests queue (first come,
# first served). Peak memory for hashing is this times memory_cost.
DEFAULT_MAX_CONCURRENT_HASHES = 1


@dataclass(frozen=True)
class PasswordHashingConfig:
    time_cost: int = DEFAULT_ARGON2_TIME_COST
    memory_cost: int = DEFAULT_ARGON2_MEMORY_COST_KIB
    max_concurrent: int = DEFAULT_MAX_CONCURRENT_HASHES


# Like Synapse's refreshable_access_token_lifetime.
DEFAULT_REFRESHABLE_ACCESS_TOKEN_LIFETIME_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class TurnConfig:
    # TURN server URIs handed to clients by GET /voip/turnServer; empty: no TURN.
    uris: tuple[str, ...] = ()
    # coturn's static-auth-secret (REST API credentials); None: no TURN.
    shared_secret: str | None = None
    # How long the credentials of GET /voip/turnServer stay valid, in ms.
    user_lifetime: int = 60 * 60 * 1000


# Server-Server API, "Resolving server names": the default federation port.
DEFAULT_FEDERATION_PORT = 8448
# Synapse's federation client timeout and response cap (matrixfederationclient.py,
# MAX_RESPONSE_SIZE): a /state answer for a large room is big, but never unbounded.
DEFAULT_FEDERATION_REQUEST_TIMEOUT_MS = 60_000
DEFAULT_FEDERATION_MAX_RESPONSE_SIZE = 100 * 1024 * 1024


@dataclass(frozen=True)
class TlsListenConfig:
    """A second, TLS listener for the federation API (Server-Server API, "TLS")."""

    host: str = "0.0.0.0"
    # None: no TLS listener (federation through a reverse proxy, or not at all).
    port: int | None = None
    # PEM files; the certificate file holds the full chain. Required with a port.
    certificate_path: Path | None = None
    private_key_path: Path | None = None
    # Also serve the client API on this listener (not only /_matrix/federation and /_matrix/key).
    serve_client_api: bool = False


@dataclass(frozen=True)
class FederationConfig:
    tls_listen: TlsListenConfig = field(default_factory=TlsListenConfig)
    # Extra CA certificates (PEM) trusted for outbound federation, beside the system's.
    trusted_ca_file: Path | None = None
    # Outbound federation to private, loopback, link-local... addresses (SSRF guard off).
    allow_private_addresses: bool = False
    request_timeout: int = DEFAULT_FEDERATION_REQUEST_TIMEOUT_MS
    max_response_size: int = DEFAULT_FEDERATION_MAX_RESPONSE_SIZE


# HTTP pushers (Client-Server API, "Push Notifications"; Push Gateway API).
DEFAULT_PUSH_REQUEST_TIMEOUT_MS = 10_000
DEFAULT_PUSH_RETRY_INITIAL_DELAY_MS = 1_000
# Synapse's HTTP pusher backs off up to an hour and gives up on a notification
# after a day (synapse/push/httppusher.py).
DEFAULT_PUSH_RETRY_MAX_DELAY_MS = 60 * 60 * 1000
DEFAULT_PUSH_GIVE_UP_AFTER_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class PushConfig:
    # Accept pusher URLs with http:// (the spec requires https://); tests and private set-ups.
    allow_http_gateways: bool = False
    # Let push delivery connect to private, loopback... addresses (SSRF guard off).
    allow_private_addresses: bool = False
    request_timeout: int = DEFAULT_PUSH_REQUEST_TIMEOUT_MS
    retry_initial_delay: int = DEFAULT_PUSH_RETRY_INITIAL_DELAY_MS
    retry_max_delay: int = DEFAULT_PUSH_RETRY_MAX_DELAY_MS
    give_up_after: int = DEFAULT_PUSH_GIVE_UP_AFTER_MS


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus /metrics listener for operators (docs/configuration.md, "metrics").

    A separate listener, off by default: it is meant for a scraper on the
    operator's network, never for clients, so it is not on the client port.
    """

    enabled: bool = False
    listen_host: str = "127.0.0.1"
    # 0 picks a free port (tests); the bound address is logged at start.
    listen_port: int = 9000
DEFAULT_MEDIA_MAX_UPLOAD_SIZE = 50 * 1024 * 1024
DEFAULT_MEDIA_UNUSED_EXPIRATION_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class MediaConfig:
    """The content repository (Client-Server API, "Content repository")."""

    # Folder of the media files; None: <config folder>/data/media (Config.media_store_path).
    store_path: Path | None = None
    # Largest upload (and cached remote file), in bytes: 413 M_TOO_LARGE beyond.
    max_upload_size: int = DEFAULT_MEDIA_MAX_UPLOAD_SIZE
    # POST /_matrix/media/v1/create: IDs a user may hold not yet uploaded, and their lifetime (ms).
    max_pending_uploads: int = 5
    unused_expiration: int = DEFAULT_MEDIA_UNUSED_EXPIRATION_MS
    # Thumbnails: images with more pixels are refused (decompression bombs); at most
    # this many generated at once (each in a worker thread).
    max_thumbnail_pixels: int = 32_000_000
    thumbnail_concurrency: int = 2
    # Make the standard thumbnail sizes in the background as soon as an image is
    # stored (as Synapse does), so the first thumbnail request finds a file.
    thumbnails_on_upload: bool = True
    # The v1.11 freeze of unauthenticated media: media stored at or after this moment
    # (ms since the epoch) answer 404 on the deprecated /_matrix/media/v3/download and
    # /thumbnail. None: no freeze.
    freeze_unauthenticated_after: int | None = None
    # GET /media/preview_url: off by default (as Synapse). Private, loopback and
    # link-local addresses are refused unless allowed; size (bytes) and time (ms) limits.
    url_preview_enabled: bool = False
    url_preview_allow_private_addresses: bool = False
    url_preview_max_size: int = 10 * 1024 * 1024
    url_preview_timeout: int = 10_000


@dataclass(frozen=True)
class TrustedKeyServer:
    """A notary asked for other servers' keys (federation.trusted_key_servers)."""

    server_name: str
    #: key ID (``ed25519:...``) → raw 32-byte public key; its answers must carry
    #: a signature by one of these.
    verify_keys: dict[str, bytes]


@dataclass(frozen=True)
class Config:
    # Folder of the config file; relative paths below were resolved against it.
    config_dir: Path
    signing_key_path: Path
    server_name: str = "localhost"
    listen: ListenConfig = field(default_factory=ListenConfig)
    # A URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://...
    # Relative SQLite paths are already resolved, so this is always absolute.
    database: str = DEFAULT_DATABASE
    well_known: WellKnownConfig = field(default_factory=WellKnownConfig)
    # How long published server keys stay valid (valid_until_ts = now + this), in ms.
    key_valid_for: int = DEFAULT_KEY_VALID_FOR_MS
    log_level: str = "INFO"
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    user_directory: UserDirectoryConfig = field(default_factory=UserDirectoryConfig)
    password_hashing: PasswordHashingConfig = field(default_factory=PasswordHashingConfig)
    # Lifetime of access tokens given to clients that support refresh tokens, in ms.
    refreshable_access_token_lifetime: int = DEFAULT_REFRESHABLE_ACCESS_TOKEN_LIFETIME_MS
    # Notaries for other servers' keys (the file's federation.trusted_key_servers);
    # none by default, unlike Synapse's matrix.org.
    trusted_key_servers: tuple[TrustedKeyServer, ...] = ()
    federation: FederationConfig = field(default_factory=FederationConfig)
    # Room version of rooms created without one (Synapse's default_room_version);
    # also GET /capabilities m.room_versions.default.
    default_room_version: str = DEFAULT_ROOM_VERSION.identifier
    push: PushConfig = field(default_factory=PushConfig)
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    media: MediaConfig = field(default_factory=MediaConfig)

    @property
    def media_store_path(self) -> Path:
        """Where media files live: ``media.store_path`` or <config folder>/data/media."""
        if self.media.store_path is not None:
            return self.media.store_path
        return self.config_dir / "data" / "media"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL or an in-memory database."""
        return sqlite_path(self.database)


# --- parsing of single values -------------------------------------------------------

# Appendices, "Server Name": hostname (IPv4, [IPv6] or DNS name) with an optional port.
_SERVER_NAME_RE = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9.-]{1,255})"
    r"(?::[0-9]{1,5})?$"
)
_DURATION_RE = re.compile(r"^\s*([0-9]+)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS_MS = {
    None: 1,
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}


def _string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value.strip()


def parse_server_name(value: object) -> str:
    name = _string(value)
    if not _SERVER_NAME_RE.match(name) or name.startswith((".", "-")):
        raise ValueError(
            f"{name!r} is not a valid server name (a hostname or IP literal with an "
            "optional :port, e.g. example.org or example.org:8448)"
        )
    if ":" in name and not name.endswith("]"):
        port = int(name.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"{name!r} has a port outside 1-65535")
    # The identifier grammar decides too: every user and room ID of this server
    # carries the name, so one the grammar rejects (``a..b``, ``1.2.3.999``)
    # would make the server's own IDs invalid.
    try:
        parse_identifier_server_name(name)
    except InvalidIdentifier as exc:
        raise ValueError(f"{name!r} is not a valid server name: {exc}") from None
    return name


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"must be a port number between 0 and 65535, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _duration_ms(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be a duration, got {value!r}")
    if isinstance(value, int):
        milliseconds = value
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        milliseconds = int(match.group(1)) * _DURATION_UNITS_MS[match.group(2)]
    else:
        raise ValueError(
            f"must be milliseconds or a number with a unit ms/s/m/h/d/w (e.g. 7d), got {value!r}"
        )
    if milliseconds <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return milliseconds


def _positive_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return float(value)


def _non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number, 0 or more, got {value!r}")
    return value


def _timestamp_ms(value: object) -> int:
    """Milliseconds since the epoch, or an ISO 8601 date / date-time (UTC unless it says)."""
    import datetime

    if isinstance(value, bool):
        raise ValueError(f"must be a date, a date-time or milliseconds, got {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be an ISO 8601 date or date-time, got {value!r}") from None
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        value = datetime.datetime(value.year, value.month, value.day)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp() * 1000)
    raise ValueError(f"must be a date, a date-time or milliseconds, got {value!r}")


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _argon2_memory_kib(value: object) -> int:
    memory = _positive_int(value)
    if memory < 8 * ARGON2_PARALLELISM:
        raise ValueError(f"must be at least {8 * ARGON2_PARALLELISM} (KiB), got {value!r}")
    return memory


def _turn_uris(value: object) -> tuple[str, ...]:
    # voip.yaml: each URI matches "^turns?:".
    if not isinstance(value, list) or not all(
        isinstance(uri, str) and re.match(r"^turns?:\S+$", uri) for uri in value
    ):
        raise ValueError(f"must be a list of turn: or turns: URIs, got {value!r}")
    return tuple(value)


def _base_url(value: object) -> str:
    url = _string(value)
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
    return url


def _support_contacts(value: object) -> tuple[dict[str, str], ...]:
    """``[{role, matrix_id?, email_address?}]`` as /.well-known/matrix/support
    lists them: each has a role and at least one way to reach it."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of contacts, got {value!r}")
    contacts = []
    for entry in value:
        allowed = {"role", "matrix_id", "email_address"}
        if not isinstance(entry, Mapping) or not set(entry) <= allowed:
            raise ValueError(
                f"each contact has role, matrix_id and email_address only, got {entry!r}"
            )
        if not all(isinstance(v, str) and v for v in entry.values()):
            raise ValueError(f"contact fields must be non-empty strings, got {entry!r}")
        if "role" not in entry or not ({"matrix_id", "email_address"} & set(entry)):
            raise ValueError(
                f"each contact needs a role and a matrix_id or email_address, got {entry!r}"
            )
        if "matrix_id" in entry and not UserID.is_valid(entry["matrix_id"]):
            raise ValueError(f"matrix_id must be a user ID, got {entry['matrix_id']!r}")
        contacts.append(dict(entry))
    return tuple(contacts)


def _publish_rule(value: object) -> str:
    rule = _string(value)
    if rule not in DIRECTORY_PUBLISH_RULES:
        raise ValueError(f"must be one of {', '.join(DIRECTORY_PUBLISH_RULES)}, got {rule!r}")
    return rule


def _room_version(value: object) -> str:
    # YAML reads an unquoted 10 as a number; room versions are strings.
    identifier = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    identifier = _string(identifier)
    if identifier not in KNOWN_ROOM_VERSIONS:
        raise ValueError(
            f"must be a known room version ({', '.join(KNOWN_ROOM_VERSIONS)}), got {value!r}"
        )
    return identifier


def _log_level(value: object) -> str:
    level = _string(value).upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _trusted_key_servers(value: object) -> tuple[TrustedKeyServer, ...]:
    """``[{server_name, verify_keys: {"ed25519:...": base64}}]``; every notary
    needs at least one key, so that its answers can be checked."""
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {{server_name, verify_keys}}, got {value!r}")
    servers = []
    for entry in value:
        if not isinstance(entry, Mapping) or set(entry) != {"server_name", "verify_keys"}:
            raise ValueError(f"each entry needs exactly server_name and verify_keys, got {entry!r}")
        keys = entry["verify_keys"]
        if not isinstance(keys, Mapping) or not keys:
            raise ValueError(f"verify_keys must map key IDs to base64 keys, got {keys!r}")
        servers.append(
            TrustedKeyServer(
                server_name=parse_server_name(entry["server_name"]),
                verify_keys={_key_id(key_id): _ed25519_key(key) for key_id, key in keys.items()},
            )
        )
    return tuple(servers)


def _key_id(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^ed25519:[A-Za-z0-9_]+$", value):
        raise ValueError(f"key IDs must be ed25519:<version>, got {value!r}")
    return value


def _ed25519_key(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not unpadded base64")
    try:
        key = decode_base64(value)
    except ValueError:
        raise ValueError(f"{value!r} is not unpadded base64") from None
    if len(key) != 32:
        raise ValueError(f"{value!r} is not a 32-byte ed25519 key")
    return key


def sqlite_path(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite:///"):
        return None
    path = database_url[len("sqlite:///") :]
    return None if path == ":memory:" else Path(path)


def _path(value: object, base_dir: Path) -> Path:
    return base_dir / _string(value)


def _database(value: object, base_dir: Path) -> str:
    url = _string(value)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError("sqlite:/// needs a file path, e.g. sqlite:///data/homeserver.db")
        if path == ":memory:":
            return url
        return "sqlite:///" + str((base_dir / path).resolve())
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise ValueError(
        f"must be sqlite:///PATH or postgresql://user:password@host/dbname, got {url!r}"
    )


@dataclass(frozen=True)
class _Key:
    parse: Callable[[object, Path], Any]
    is_string: bool  # environment values are taken literally rather than as YAML


def _plain(parse: Callable[[object], Any], *, is_string: bool) -> _Key:
    return _Key(lambda value, _base_dir: parse(value), is_string)


# Every key the config accepts, by dotted path. Defaults live on the dataclasses.
_KEYS: dict[str, _Key] = {
    "server_name": _plain(parse_server_name, is_string=True),
    "listen.host": _plain(_string, is_string=True),
    "listen.port": _plain(_port, is_string=False),
    "listen.x_forwarded": _plain(_bool, is_string=False),
    "listen.header_timeout": _plain(_duration_ms, is_string=False),
    "listen.body_timeout": _plain(_duration_ms, is_string=False),
    "listen.idle_timeout": _plain(_duration_ms, is_string=False),
    "listen.max_connections_per_ip": _plain(_non_negative_int, is_string=False),
    "database": _Key(_database, is_string=True),
    "signing_key_path": _Key(lambda value, base_dir: base_dir / _string(value), True),
    "well_known.client_base_url": _plain(_base_url, is_string=True),
    "well_known.server": _plain(parse_server_name, is_string=True),
    "well_known.support_page": _plain(_base_url, is_string=True),
    "well_known.support_contacts": _plain(_support_contacts, is_string=False),
    "directory.publish_rule": _plain(_publish_rule, is_string=True),
    "key_valid_for": _plain(_duration_ms, is_string=False),
    "log_level": _plain(_log_level, is_string=True),
    "default_room_version": _plain(_room_version, is_string=True),
    "ratelimit.enabled": _plain(_bool, is_string=False),
    "turn.uris": _plain(_turn_uris, is_string=False),
    "turn.shared_secret": _plain(_string, is_string=True),
    "turn.user_lifetime": _plain(_duration_ms, is_string=False),
    "registration.enabled": _plain(_bool, is_string=False),
    "registration.require_token": _plain(_bool, is_string=False),
    "registration.guest_access": _plain(_bool, is_string=False),
    "user_directory.search_all_users": _plain(_bool, is_string=False),
    "password_hashing.time_cost": _plain(_positive_int, is_string=False),
    "password_hashing.memory_cost": _plain(_argon2_memory_kib, is_string=False),
    "password_hashing.max_concurrent": _plain(_positive_int, is_string=False),
    "refreshable_access_token_lifetime": _plain(_duration_ms, is_string=False),
    "federation.trusted_key_servers": _plain(_trusted_key_servers, is_string=False),
    "federation.tls_listen.host": _plain(_string, is_string=True),
    "federation.tls_listen.port": _plain(_port, is_string=False),
    "federation.tls_listen.certificate_path": _Key(_path, is_string=True),
    "federation.tls_listen.private_key_path": _Key(_path, is_string=True),
    "federation.tls_listen.serve_client_api": _plain(_bool, is_string=False),
    "federation.trusted_ca_file": _Key(_path, is_string=True),
    "federation.allow_private_addresses": _plain(_bool, is_string=False),
    "federation.request_timeout": _plain(_duration_ms, is_string=False),
    "federation.max_response_size": _plain(_positive_int, is_string=False),
    "push.allow_http_gateways": _plain(_bool, is_string=False),
    "push.allow_private_addresses": _plain(_bool, is_string=False),
    "push.request_timeout": _plain(_duration_ms, is_string=False),
    "push.retry_initial_delay": _plain(_duration_ms, is_string=False),
    "push.retry_max_delay": _plain(_duration_ms, is_string=False),
    "push.give_up_after": _plain(_duration_ms, is_string=False),
    "metrics.enabled": _plain(_bool, is_string=False),
    "metrics.listen_host": _plain(_string, is_string=True),
    "metrics.listen_port": _plain(_port, is_string=False),
    "media.store_path": _Key(_path, is_string=True),
    "media.max_upload_size": _plain(_positive_int, is_string=False),
    "media.max_pending_uploads": _plain(_positive_int, is_string=False),
    "media.unused_expiration": _plain(_duration_ms, is_string=False),
    "media.max_thumbnail_pixels": _plain(_positive_int, is_string=False),
    "media.thumbnail_concurrency": _plain(_positive_int, is_string=False),
    "media.thumbnails_on_upload": _plain(_bool, is_string=False),
    "media.freeze_unauthenticated_after": _plain(_timestamp_ms, is_string=False),
    "media.url_preview_enabled": _plain(_bool, is_string=False),
    "media.url_preview_allow_private_addresses": _plain(_bool, is_string=False),
    "media.url_preview_max_size": _plain(_positive_int, is_string=False),
    "media.url_preview_timeout": _plain(_duration_ms, is_string=False),
    **{
        f"ratelimit.{action}.{name}": _plain(parse, is_string=False)
        for action in ("message", "login", "registration")
        for name, parse in (("per_second", _positive_number), ("burst", _positive_int))
    },
}
# Every prefix of a dotted key is a section: "federation" and "federation.tls_listen".
_SECTIONS = {
    key.rsplit(".", depth)[0]
    for key in _KEYS
    for depth in range(1, key.count(".") + 1)
}


def env_var_name(dotted_key: str) -> str:
    """``well_known.client_base_url`` → ``RANVIER_WELL_KNOWN_CLIENT_BASE_URL``."""
    return ENV_PREFIX + dotted_key.replace(".", "_").upper()


ENV_VARS: dict[str, str] = {env_var_name(key): key for key in _KEYS}
# Read by the command line rather than by the config itself.
CLI_ENV_VARS = frozenset({"RANVIER_CONFIG"})


# --- loading ------------------------------------------------------------------------


def _flatten(
    node: Mapping[Any, Any],
    prefix: str,
    source: str,
    values: dict[str, object],
    sources: dict[str, str],
    errors: list[str],
) -> None:
    for raw_key, value in node.items():
        dotted = f"{prefix}{raw_key}"
        if not isinstance(raw_key, str):
            errors.append(f"{source}: key {raw_key!r} must be a string")
        elif dotted in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                errors.append(f"{source}: '{dotted}' must be a mapping of keys, got {value!r}")
                continue
            _flatten(value, dotted + ".", source, values, sources, errors)
        elif dotted in _KEYS:
            values[dotted] = value
            sources[dotted] = f"{source}: '{dotted}'"
        else:
            import difflib  # only for this error message; kept out of the server's memory

            close = difflib.get_close_matches(dotted, [*_KEYS, *_SECTIONS], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append(f"{source}: unknown key '{dotted}'{hint}")


def _apply_env(
    env: Mapping[str, str],
    values: dict[str, object],
    sources: dict[str, str],
    errors: list[str],
) -> None:
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in CLI_ENV_VARS:
            continue
        dotted = ENV_VARS.get(name)
        if dotted is None:
            logger.warning("Ignoring unknown environment variable %s", name)
            continue
        sources[dotted] = f"environment variable {name}"
        if not text.strip():
            values[dotted] = None
        elif _KEYS[dotted].is_string:
            values[dotted] = text
        else:
            try:
                values[dotted] = yaml.safe_load(text)
            except yaml.YAMLError:
                errors.append(f"{sources[dotted]}: {text!r} is not a valid value")


def parse_config(
    raw: Mapping[str, Any] | None,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    source: str = "config",
) -> Config:
    """Build a Config from parsed YAML ``raw`` plus ``env`` overrides (default: os.environ)."""
    base_dir = base_dir.resolve()
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    errors: list[str] = []
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
        _flatten(raw, "", source, values, sources, errors)
    _apply_env(os.environ if env is None else env, values, sources, errors)

    parsed: dict[str, Any] = {}
    for dotted, value in values.items():
        if value is None:  # null or empty: keep the default
            continue
        try:
            parsed[dotted] = _KEYS[dotted].parse(value, base_dir)
        except ValueError as exc:
            errors.append(f"{sources[dotted]}: {exc}")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))

    server_name = parsed.get("server_name", Config.server_name)
    return Config(
        config_dir=base_dir,
        server_name=server_name,
        listen=ListenConfig(
            host=parsed.get("listen.host", ListenConfig.host),
            port=parsed.get("listen.port", ListenConfig.port),
            x_forwarded=parsed.get("listen.x_forwarded", ListenConfig.x_forwarded),
            header_timeout=parsed.get("listen.header_timeout", DEFAULT_HEADER_TIMEOUT_MS),
            body_timeout=parsed.get("listen.body_timeout", DEFAULT_BODY_TIMEOUT_MS),
            idle_timeout=parsed.get("listen.idle_timeout", DEFAULT_IDLE_TIMEOUT_MS),
            max_connections_per_ip=parsed.get("listen.max_connections_per_ip"),
        ),
        database=parsed.get("database", _database(DEFAULT_DATABASE, base_dir)),
        signing_key_path=parsed.get(
            "signing_key_path", base_dir / default_signing_key_file(server_name)
        ),
        well_known=WellKnownConfig(
            client_base_url=parsed.get("well_known.client_base_url"),
            server=parsed.get("well_known.server"),
            support_page=parsed.get("well_known.support_page"),
            support_contacts=parsed.get("well_known.support_contacts", ()),
        ),
        key_valid_for=parsed.get("key_valid_for", DEFAULT_KEY_VALID_FOR_MS),
        log_level=parsed.get("log_level", Config.log_level),
        default_room_version=parsed.get("default_room_version", Config.default_room_version),
        ratelimit=_ratelimit_config(parsed),
        turn=TurnConfig(
            uris=parsed.get("turn.uris", TurnConfig.uris),
            shared_secret=parsed.get("turn.shared_secret"),
            user_lifetime=parsed.get("turn.user_lifetime", TurnConfig.user_lifetime),
        ),
        registration=RegistrationConfig(
            enabled=parsed.get("registration.enabled", RegistrationConfig.enabled),
            require_token=parsed.get(
                "registration.require_token", RegistrationConfig.require_token
            ),
            guest_access=parsed.get("registration.guest_access", RegistrationConfig.guest_access),
        ),
        user_directory=UserDirectoryConfig(
            search_all_users=parsed.get(
                "user_directory.search_all_users", UserDirectoryConfig.search_all_users
            ),
        ),
        password_hashing=PasswordHashingConfig(
            time_cost=parsed.get("password_hashing.time_cost", DEFAULT_ARGON2_TIME_COST),
            memory_cost=parsed.get("password_hashing.memory_cost", DEFAULT_ARGON2_MEMORY_COST_KIB),
            max_concurrent=parsed.get(
                "password_hashing.max_concurrent", DEFAULT_MAX_CONCURRENT_HASHES
            ),
        ),
        refreshable_access_token_lifetime=parsed.get(
            "refreshable_access_token_lifetime", DEFAULT_REFRESHABLE_ACCESS_TOKEN_LIFETIME_MS
        ),
        trusted_key_servers=parsed.get("federation.trusted_key_servers", ()),
        federation=_federation_config(parsed),
        push=_push_config(parsed),
        directory=DirectoryConfig(
            publish_rule=parsed.get("directory.publish_rule", DirectoryConfig.publish_rule)
        ),
        metrics=MetricsConfig(
            enabled=parsed.get("metrics.enabled", MetricsConfig.enabled),
            listen_host=parsed.get("metrics.listen_host", MetricsConfig.listen_host),
            listen_port=parsed.get("metrics.listen_port", MetricsConfig.listen_port),
        ),
        media=_media_config(parsed),
    )


def _push_config(parsed: Mapping[str, Any]) -> PushConfig:
    defaults = PushConfig()
    return PushConfig(
        **{
            name: parsed.get(f"push.{name}", getattr(defaults, name))
            for name in (
                "allow_http_gateways",
                "allow_private_addresses",
                "request_timeout",
                "retry_initial_delay",
                "retry_max_delay",
                "give_up_after",
            )
        }
    )


def _media_config(parsed: Mapping[str, Any]) -> MediaConfig:
    defaults = MediaConfig()
    return MediaConfig(
        **{
            name: parsed.get(f"media.{name}", getattr(defaults, name))
            for name in MediaConfig.__dataclass_fields__
        }
    )


def _federation_config(parsed: Mapping[str, Any]) -> FederationConfig:
    tls = TlsListenConfig(
        host=parsed.get("federation.tls_listen.host", TlsListenConfig.host),
        port=parsed.get("federation.tls_listen.port"),
        certificate_path=parsed.get("federation.tls_listen.certificate_path"),
        private_key_path=parsed.get("federation.tls_listen.private_key_path"),
        serve_client_api=parsed.get(
            "federation.tls_listen.serve_client_api", TlsListenConfig.serve_client_api
        ),
    )
    if tls.port is not None and (tls.certificate_path is None or tls.private_key_path is None):
        raise ConfigError(
            "invalid configuration:\n  'federation.tls_listen.port' needs "
            "'federation.tls_listen.certificate_path' and 'federation.tls_listen.private_key_path'"
        )
    return FederationConfig(
        tls_listen=tls,
        trusted_ca_file=parsed.get("federation.trusted_ca_file"),
        allow_private_addresses=parsed.get(
            "federation.allow_private_addresses", FederationConfig.allow_private_addresses
        ),
        request_timeout=parsed.get(
            "federation.request_timeout", DEFAULT_FEDERATION_REQUEST_TIMEOUT_MS
        ),
        max_response_size=parsed.get(
            "federation.max_response_size", DEFAULT_FEDERATION_MAX_RESPONSE_SIZE
        ),
    )


def _ratelimit_config(parsed: Mapping[str, Any]) -> RateLimitConfig:
    defaults = RateLimitConfig()

    def rate(action: str) -> RateConfig:
        default: RateConfig = getattr(defaults, action)
        return RateConfig(
            per_second=parsed.get(f"ratelimit.{action}.per_second", default.per_second),
            burst=parsed.get(f"ratelimit.{action}.burst", default.burst),
        )

    return RateLimitConfig(
        enabled=parsed.get("ratelimit.enabled", defaults.enabled),
        message=rate("message"),
        login=rate("login"),
        registration=rate("registration"),
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML config at ``path`` and apply environment overrides."""
    config_path = Path(path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(config_path)!r} does not exist "
            f"(create one with `ranvier init --config {config_path}`)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(config_path)!r}: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path} is not valid YAML: {exc}") from None
    return parse_config(raw, config_path.absolute().parent, env, source=str(config_path))


# --- the signing key file -----------------------------------------------------------


def default_signing_key_file(server_name: str) -> str:
    # Keep the file name portable: "[::1]:8448" becomes "__1__8448".
    return re.sub(r"[^A-Za-z0-9.-]", "_", server_name) + ".signing.key"


def generate_signing_key() -> SigningKey:
    """A fresh ed25519 key with a short random version, e.g. ``a_XyZw``.

    Key versions must match [a-zA-Z0-9_] (server-server API, "Publishing Keys").
    """
    alphabet = string.ascii_letters + string.digits
    return SigningKey.generate("a_" + "".join(secrets.choice(alphabet) for _ in range(4)))


def write_signing_key(path: Path, key: SigningKey) -> None:
    """Write ``key`` in Synapse's one-line format, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key.serialise() + "\n")


def read_signing_key(path: Path) -> SigningKey:
    """Read the first key of a Synapse-format signing key file."""
    try:
        lines = [line for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read signing key file {str(path)!r}: {exc}") from None
    if not lines:
        raise ConfigError(f"signing key file {str(path)!r} is empty")
    try:
        return SigningKey.parse(lines[0])
    except ValueError as exc:
        raise ConfigError(f"signing key file {str(path)!r}: {exc}") from None


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The server's key; a missing file gets a new key (as Synapse does on first start)."""
    if not path.exists():
        key = generate_signing_key()
        write_signing_key(path, key)
        logger.warning("Generated a new signing key %s in %s", key.key_id, path)
        return key
    return read_signing_key(path)
