"""The ``ranvier`` command: ``init`` writes a config and key, ``serve`` runs the server."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import uvloop
from aiohttp import web

import ranvier
from ranvier.allocator import limit_malloc_arenas
from ranvier.api.http import SIGNING_KEY, TlsSite, wall_clock_ms
from ranvier.api.http import serve as serve_http
from ranvier.api.tls_listener import server_ssl_context
from ranvier.app import build_app
from ranvier.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    default_signing_key_file,
    generate_signing_key,
    load_config,
    load_or_create_signing_key,
    parse_server_name,
    read_signing_key,
    write_signing_key,
)
from ranvier.config import _duration_ms as parse_duration_ms
from ranvier.core.ids import is_my_user_id
from ranvier.entry import startup_done
from ranvier.errors import MatrixError
from ranvier.services.accounts import AccountsService
from ranvier.services.outbound import outbound_ssl_context
from ranvier.services.reports import list_reports
from ranvier.storage import Database, open_database
from ranvier.storage.reports import ReportRow

T = TypeVar("T")

logger = logging.getLogger("ranvier")

# Exit status for an unusable configuration (like a usage error).
EXIT_CONFIG_ERROR = 2
# Exit status when the server cannot start for another reason (e.g. port in use).
EXIT_STARTUP_ERROR = 1

CONFIG_TEMPLATE = """\
# Ranvier homeserver configuration, written by `ranvier init`.
# Reference for every key: docs/configuration.md
#
# Every key can be overridden from the environment with RANVIER_<KEY_PATH>,
# upper case, nested keys joined by "_": RANVIER_SERVER_NAME,
# RANVIER_LISTEN_PORT, RANVIER_WELL_KNOWN_CLIENT_BASE_URL, ...
# Relative paths are resolved against the folder of this file.

# The name in your users' IDs (@alice:{server_name_plain}) and rooms. It cannot
# be changed once the server has users or has joined rooms.
server_name: {server_name}

# Where the HTTP listener binds (client and federation APIs on one port).
# Put a TLS-terminating reverse proxy in front of it to serve the internet.
listen:
  host: "127.0.0.1"
  port: 8008

# sqlite:///PATH for the embedded database (relative to this file), or
# postgresql://user:password@host:5432/dbname for PostgreSQL.
database: "sqlite:///data/homeserver.db"

# The server's ed25519 signing key, in Synapse's format. Keep it secret and
# keep it: other servers remember it.
signing_key_path: {signing_key_path}

# How long other servers may cache the published signing key (ms, or 1h, 7d...).
key_valid_for: 7d

# Discovery documents under /.well-known/matrix/; served only when set.
well_known:
  # client_base_url: "https://matrix.example.org"
  # server: "matrix.example.org:443"

# DEBUG, INFO, WARNING, ERROR or CRITICAL.
log_level: INFO

# Federation (docs/federation.md). Without tls_listen, serve it through the
# reverse proxy; with it, Ranvier also listens with TLS itself (usually 8448).
federation:
  # tls_listen:
  #   port: 8448
  #   certificate_path: "/etc/letsencrypt/live/example.org/fullchain.pem"
  #   private_key_path: "/etc/letsencrypt/live/example.org/privkey.pem"
  # Extra CAs (PEM) trusted for outbound federation, besides the system's.
  # trusted_ca_file: "private-ca.pem"
  # Outbound federation to private and loopback addresses (private networks only).
  allow_private_addresses: false

# Who may create accounts. Closed by default: create accounts with
# `ranvier user create NAME [--admin] --config {config_file}`. require_token
# lets in only holders of a token from `ranvier registration-token create`.
registration:
  enabled: false
  require_token: false
  guest_access: false

# Prometheus metrics for the operator, on a listener of their own, never the
# client port (docs/monitoring.md).
metrics:
  enabled: false
  # listen_host: 127.0.0.1
  # listen_port: 9000
"""


def _yaml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def _fail_config(error: ConfigError) -> None:
    click.echo(f"ranvier: {error}", err=True)
    sys.exit(EXIT_CONFIG_ERROR)


@click.group()
@click.version_option(ranvier.__version__, prog_name="ranvier")
@click.pass_context
def cli(context: click.Context) -> None:
    """Ranvier, a Matrix homeserver."""
    if context.invoked_subcommand != "serve":
        gc.enable()  # off only while the server starts (ranvier/entry.py)


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    envvar="RANVIER_CONFIG",
    help="Where to write the config file.",
)
@click.option("--server-name", default="localhost", show_default=True, help="The server name.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
def init(config_path: Path, server_name: str, force: bool) -> None:
    """Write a config file, a signing key and the data folder.

    An existing signing key file is kept, even with --force: losing a key makes
    other servers distrust this one. Delete it by hand to start afresh.
    """
    try:
        server_name = parse_server_name(server_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server-name") from None
    if config_path.exists() and not force:
        raise click.ClickException(f"{config_path} already exists; use --force to overwrite it")
    config_dir = config_path.absolute().parent
    key_file = default_signing_key_file(server_name)
    key_path = config_dir / key_file

    config_dir.mkdir(parents=True, exist_ok=True)
    if key_path.exists():
        try:
            key = read_signing_key(key_path)
        except ConfigError as error:
            _fail_config(error)
        click.echo(f"Keeping the existing signing key {key.key_id} in {key_path}")
    else:
        key = generate_signing_key()
        write_signing_key(key_path, key)
        click.echo(f"Wrote a new signing key {key.key_id} to {key_path}")
    (config_dir / "data").mkdir(exist_ok=True)
    config_path.write_text(
        CONFIG_TEMPLATE.format(
            server_name=_yaml_string(server_name),
            server_name_plain=server_name,
            signing_key_path=_yaml_string(key_file),
            config_file=config_path,
        ),
        encoding="utf-8",
    )
    click.echo(f"Wrote {config_path}; start the server with: ranvier serve --config {config_path}")


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    envvar="RANVIER_CONFIG",
    help="The config file (keys overridable by RANVIER_* variables).",
)
def serve(config_path: Path) -> None:
    """Run the homeserver until SIGTERM or SIGINT, then shut down gracefully."""
    try:
        config = load_config(config_path)
    except ConfigError as error:
        _fail_config(error)
    _setup_logging(config.log_level)
    try:
        signing_key = load_or_create_signing_key(config.signing_key_path)
    except (ConfigError, OSError) as error:
        _fail_config(ConfigError(str(error)))
    tls_sites = _tls_sites_or_exit(config)
    limit_malloc_arenas()  # before any worker thread starts
    app = build_app(config, signing_key=signing_key)
    try:
        uvloop.run(_serve(app, config, tls_sites))
    except OSError as error:  # e.g. the port is taken
        logger.error("Cannot serve on %s:%d: %s", config.listen.host, config.listen.port, error)
        sys.exit(EXIT_STARTUP_ERROR)
    logger.info("Stopped")


def _tls_sites_or_exit(config: Config) -> list[TlsSite]:
    """The federation TLS listener, if configured; unusable certificate files stop here.

    The outbound CA file is checked here too, so a typo fails at start rather
    than at the first federation request.
    """
    federation = config.federation
    if federation.trusted_ca_file is not None:
        # Only the file needs checking: the system's CAs load when the first
        # outbound connection needs them (loading them here cost ~25-35 ms of
        # every start).
        try:
            outbound_ssl_context(federation.trusted_ca_file)
        except (OSError, ssl.SSLError) as error:
            _fail_config(ConfigError(f"federation.trusted_ca_file: cannot load: {error}"))
    tls = federation.tls_listen
    if tls.port is None:
        return []
    try:
        context = server_ssl_context(tls)
    except (OSError, ssl.SSLError, ValueError) as error:
        _fail_config(ConfigError(f"federation.tls_listen: cannot load the certificate: {error}"))
    return [TlsSite(tls.host, tls.port, context)]


async def _serve(app: web.Application, config: Config, tls_sites: list[TlsSite]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop)

    def started(addresses: list[Any]) -> None:
        tls_ports = {site.port for site in tls_sites}
        bound = ", ".join(
            f"{'https' if port in tls_ports else 'http'}://{host}:{port}"
            for host, port, *_ in addresses
        )
        logger.info(
            "Ranvier %s serving %s on %s (signing key %s, database %s)",
            ranvier.__version__,
            config.server_name,
            bound,
            app[SIGNING_KEY].key_id,
            config.database,
        )
        startup_done()

    await serve_http(
        app, config.listen.host, config.listen.port, stop, started=started, tls_sites=tls_sites
    )


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    logger.info("Received %s", signal.Signals(signum).name)
    stop.set()


# --- accounts: `ranvier user create`, `ranvier registration-token create` -------------


@dataclass
class _CliHost:
    """The part of a Homeserver the accounts service needs, for offline commands."""

    config: Config
    server_name: str
    database: Database
    clock_ms: Callable[[], int]


def _load_config_or_exit(config_path: Path) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as error:
        _fail_config(error)
        raise  # unreachable: _fail_config exits


def _run_with_accounts(config: Config, action: Callable[[AccountsService], Awaitable[T]]) -> T:
    """Open the database (migrating it), run ``action`` with an accounts service, close."""

    async def run() -> T:
        if config.sqlite_path is not None:
            config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        database = await open_database(config.database)
        try:
            host = _CliHost(config, config.server_name, database, wall_clock_ms)
            return await action(AccountsService(host))
        finally:
            await database.close()

    return asyncio.run(run())


_CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    envvar="RANVIER_CONFIG",
    help="The config file (keys overridable by RANVIER_* variables).",
)


@cli.group()
def user() -> None:
    """Manage local user accounts."""


@user.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user a server administrator.")
@click.option("--password", help="The password (prompted for when not given).")
@_CONFIG_OPTION
def user_create(name: str, admin: bool, password: str | None, config_path: Path) -> None:
    """Create the account NAME (a localpart like alice, or @alice:your.server)."""
    config = _load_config_or_exit(config_path)
    localpart = name
    if name.startswith("@"):
        localpart = name[1:].partition(":")[0]
        if not is_my_user_id(name, config.server_name):
            raise click.BadParameter(
                f"{name} is not a user of this server ({config.server_name})", param_hint="NAME"
            )
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.BadParameter("the password must not be empty", param_hint="--password")

    async def create(accounts: AccountsService) -> str:
        try:
            await accounts.check_username_available(localpart)
            accounts.check_password_shape(password)
            user_id, _ = await accounts.register(localpart, password, is_admin=admin, login=False)
        except MatrixError as error:
            raise click.ClickException(error.error) from None
        return user_id

    user_id = _run_with_accounts(config, create)
    click.echo(f"Created {'administrator' if admin else 'user'} {user_id}")


@cli.group("registration-token")
def registration_token() -> None:
    """Manage registration tokens (for `registration.require_token`)."""


@registration_token.command("create")
@click.option("--token", help="The token (default: 16 random characters).")
@click.option(
    "--uses",
    type=click.IntRange(min=1),
    help="How many registrations it allows (default: unlimited).",
)
@click.option(
    "--expires",
    "expires_in",
    help="Valid for this long from now: 3600000 (ms), 30m, 12h, 7d... (default: forever).",
)
@_CONFIG_OPTION
def registration_token_create(
    token: str | None, uses: int | None, expires_in: str | None, config_path: Path
) -> None:
    """Create a registration token and print it."""
    config = _load_config_or_exit(config_path)
    expiry_time = None
    if expires_in is not None:
        try:
            expiry_time = wall_clock_ms() + parse_duration_ms(expires_in)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--expires") from None

    async def create(accounts: AccountsService) -> str:
        try:
            return await accounts.create_registration_token(token, uses, expiry_time)
        except ValueError as error:
            raise click.ClickException(str(error)) from None

    click.echo(_run_with_accounts(config, create))


@cli.group()
def reports() -> None:
    """Content reported by users (events, rooms, users), for administrators."""


@reports.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=10_000),
    default=50,
    show_default=True,
    help="How many reports.",
)
@click.option(
    "--before",
    "before_id",
    type=click.IntRange(min=1),
    help="Only reports older than this report ID (to page on).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_CONFIG_OPTION
def reports_list(limit: int, before_id: int | None, as_json: bool, config_path: Path) -> None:
    """List reports, newest first."""
    config = _load_config_or_exit(config_path)

    async def run() -> list[ReportRow]:
        if config.sqlite_path is not None:
            config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        database = await open_database(config.database)
        try:
            return await list_reports(database, limit, before_id)
        finally:
            await database.close()

    for row in asyncio.run(run()):
        click.echo(_report_json(row) if as_json else _report_line(row))


def _report_json(row: ReportRow) -> str:
    return json.dumps(dataclasses.asdict(row), ensure_ascii=False, sort_keys=True)


def _report_line(row: ReportRow) -> str:
    when = datetime.fromtimestamp(row.received_ts / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [f"#{row.id}", when, row.kind, f"by {row.reporter}"]
    targets = (("room", row.room_id), ("event", row.event_id), ("user", row.target_user_id))
    for label, value in targets:
        if value is not None:
            parts.append(f"{label} {value}")
    if row.score is not None:
        parts.append(f"score {row.score}")
    # json.dumps: a reason is user text; quoted and escaped, it cannot forge lines.
    parts.append(f"reason {json.dumps(row.reason, ensure_ascii=False)}")
    return "  ".join(parts)


@cli.group()
def media() -> None:
    """Administer the content repository (uploaded and cached media)."""


def _run_with_media(config: Config, action: Callable[[Any], Awaitable[T]]) -> T:
    """Open the database (migrating it), run ``action`` with a MediaAdmin, close."""
    from ranvier.services.media.admin import MediaAdmin

    async def run() -> T:
        if config.sqlite_path is not None:
            config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        database = await open_database(config.database)
        try:
            return await action(MediaAdmin(database, config.media_store_path, wall_clock_ms))
        finally:
            await database.close()

    return asyncio.run(run())


@media.command("list")
@click.argument("user_id")
@_CONFIG_OPTION
def media_list(user_id: str, config_path: Path) -> None:
    """List the media USER_ID uploaded: URI, size, type, name, date, state."""
    from ranvier.services.media.admin import format_ts

    config = _load_config_or_exit(config_path)
    records = _run_with_media(config, lambda admin: admin.list_user_media(user_id))
    total = 0
    for record in records:
        state = "quarantined" if record.quarantined else ("pending" if record.pending else "")
        size = record.size or 0
        total += size
        click.echo(
            f"mxc://{record.server_name}/{record.media_id}\t{size}\t{record.content_type or '-'}"
            f"\t{record.upload_name or '-'}\t{format_ts(record.created_ts)}\t{state}".rstrip()
        )
    click.echo(f"{len(records)} media, {total} bytes")


@media.command("quarantine")
@click.argument("uri")
@click.option("--undo", is_flag=True, help="Lift the quarantine.")
@_CONFIG_OPTION
def media_quarantine(uri: str, undo: bool, config_path: Path) -> None:
    """Quarantine the media URI (mxc://server/id): it answers 404 to everyone."""
    config = _load_config_or_exit(config_path)

    async def run(admin: Any) -> bool:
        try:
            found: bool = await admin.quarantine(uri, not undo)
        except MatrixError as error:
            raise click.ClickException(error.error) from None
        return found

    if not _run_with_media(config, run):
        raise click.ClickException(f"No media {uri}")
    click.echo(f"{'Released' if undo else 'Quarantined'} {uri}")


@media.command("delete-old")
@click.option(
    "--days", type=click.IntRange(min=1), required=True, help="Older than this many days."
)
@click.option("--yes", is_flag=True, help="Delete; without it, only list what would be deleted.")
@_CONFIG_OPTION
def media_delete_old(days: int, yes: bool, config_path: Path) -> None:
    """Delete local media older than --days that no event or profile references,
    and cached remote media older than that. Media referenced only inside
    encrypted messages are invisible to the server and count as unreferenced."""
    config = _load_config_or_exit(config_path)
    report = _run_with_media(
        config, lambda admin: admin.delete_old_unreferenced(days, dry_run=not yes)
    )
    for uri in report.deleted:
        click.echo(uri)
    verb = "Deleted" if yes else "Would delete"
    click.echo(
        f"{verb} {len(report.deleted)} media ({report.freed_files} files freed); "
        f"kept {report.kept_referenced} still referenced"
    )


@media.command("usage")
@_CONFIG_OPTION
def media_usage(config_path: Path) -> None:
    """Disk usage per user: number of media and bytes (shared files counted per upload)."""
    config = _load_config_or_exit(config_path)
    for user_id, count, size in _run_with_media(config, lambda admin: admin.usage()):
        click.echo(f"{user_id}\t{count}\t{size}")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    cli(prog_name="ranvier")


if __name__ == "__main__":
    main()
