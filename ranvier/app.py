"""Wiring: builds the HTTP application, storage and services from config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ranvier.api import well_known
from ranvier.api.client import account as client_account
from ranvier.api.client import account_data as client_account_data
from ranvier.api.client import capabilities as client_capabilities
from ranvier.api.client import devices as client_devices
from ranvier.api.client import directory as client_directory
from ranvier.api.client import filters as client_filters
from ranvier.api.client import key_backup as client_key_backup
from ranvier.api.client import keys as client_keys
from ranvier.api.client import legacy_sync as client_legacy_sync
from ranvier.api.client import login as client_login
from ranvier.api.client import media as client_media
from ranvier.api.client import membership as client_membership
from ranvier.api.client import notifications as client_notifications
from ranvier.api.client import openid as client_openid
from ranvier.api.client import presence as client_presence
from ranvier.api.client import profile as client_profile
from ranvier.api.client import push_rules as client_push_rules
from ranvier.api.client import pushers as client_pushers
from ranvier.api.client import receipts as client_receipts
from ranvier.api.client import relations as client_relations
from ranvier.api.client import reports as client_reports
from ranvier.api.client import room_history as client_room_history
from ranvier.api.client import room_upgrade as client_room_upgrade
from ranvier.api.client import rooms as client_rooms
from ranvier.api.client import search as client_search
from ranvier.api.client import spaces as client_spaces
from ranvier.api.client import sync as client_sync
from ranvier.api.client import tags as client_tags
from ranvier.api.client import thirdparty as client_thirdparty
from ranvier.api.client import threepid as client_threepid
from ranvier.api.client import to_device as client_to_device
from ranvier.api.client import typing as client_typing
from ranvier.api.client import versions
from ranvier.api.client import voip as client_voip
from ranvier.api.federation import events as federation_events
from ranvier.api.federation import invite as federation_invite
from ranvier.api.federation import joins as federation_joins
from ranvier.api.federation import keys, version
from ranvier.api.federation import media as federation_media
from ranvier.api.federation import membership as federation_membership
from ranvier.api.federation import query as federation_query
from ranvier.api.federation import send as federation_send
from ranvier.api.http import (
    CLOCK_MS,
    CONFIG,
    HOMESERVER,
    SIGNING_KEY,
    install_http_layer,
    wall_clock_ms,
)
from ranvier.api.tls_listener import federation_only_over_tls
from ranvier.config import Config, load_or_create_signing_key
from ranvier.core.signing import SigningKey
from ranvier.homeserver import Homeserver
from ranvier.storage import open_database

# Matrix bodies are small JSON documents. Media uploads stream request.content and
# never call request.read(), so this does not limit them (media.max_upload_size does).
CLIENT_MAX_SIZE = 1024 * 1024

ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (
    versions.routes,
    well_known.routes,
    version.routes,
    keys.routes,
    federation_send.routes,
    federation_events.routes,
    federation_joins.routes,
    federation_query.routes,
    client_account.routes,
    client_login.routes,
    client_filters.routes,
    client_account_data.routes,
    client_tags.routes,
    client_typing.routes,
    client_receipts.routes,
    client_presence.routes,
    client_push_rules.routes,
    client_pushers.routes,
    client_notifications.routes,
    client_capabilities.routes,
    client_thirdparty.routes,
    client_threepid.routes,
    client_voip.routes,
    client_rooms.routes,
    client_reports.routes,
    client_sync.routes,
    client_room_history.routes,
    client_relations.routes,
    client_legacy_sync.routes,
    client_membership.routes,
    client_profile.routes,
    client_directory.routes,
    client_devices.routes,
    client_keys.routes,
    client_to_device.routes,
    client_key_backup.routes,
    client_room_upgrade.routes,
    client_search.routes,
    federation_invite.routes,
    federation_membership.routes,
    client_spaces.routes,
    client_openid.routes,
    client_media.routes,
    federation_media.routes,
)


def build_app(
    config: Config,
    *,
    signing_key: SigningKey | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> web.Application:
    """The homeserver's aiohttp application.

    ``signing_key`` defaults to the one in ``config.signing_key_path`` (created if
    missing); tests pass their own key and clock. The database is opened (and
    migrated) when the application starts and closed when it stops.
    """
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    install_http_layer(app)
    tls_listen = config.federation.tls_listen
    if tls_listen.port is not None and not tls_listen.serve_client_api:
        app.middlewares.append(federation_only_over_tls)
    app[CONFIG] = config
    key = signing_key if signing_key is not None else load_or_create_signing_key(config.signing_key_path)
    app[SIGNING_KEY] = key
    app[CLOCK_MS] = clock_ms

    async def homeserver_context(app: web.Application) -> AsyncIterator[None]:
        if config.sqlite_path is not None:
            config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        database = await open_database(config.database)
        hs = Homeserver(config, database, key, clock_ms)
        app[HOMESERVER] = hs
        try:
            await hs.start()
            yield
        finally:
            await hs.close()

    app.cleanup_ctx.append(homeserver_context)
    if config.metrics.enabled:
        # Imported only when on: prometheus-client costs ~1.7 MB of RSS (ranvier/api/metrics.py).
        from ranvier.api.metrics import install_metrics

        install_metrics(app, config.metrics)
    for routes in ROUTE_TABLES:
        app.add_routes(routes)
    app.on_startup.append(versions.compute_on_startup)  # /versions lists what is routed
    return app
