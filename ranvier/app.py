"""Wiring: builds the HTTP application (and later storage and services) from config."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ranvier.api import well_known
from ranvier.api.client import versions
from ranvier.api.federation import keys, version
from ranvier.api.http import CLOCK_MS, CONFIG, SIGNING_KEY, install_http_layer, wall_clock_ms
from ranvier.config import Config, load_or_create_signing_key
from ranvier.core.signing import SigningKey

# Matrix bodies are small JSON documents; media uploads will raise this for their routes.
CLIENT_MAX_SIZE = 1024 * 1024


def build_app(
    config: Config,
    *,
    signing_key: SigningKey | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> web.Application:
    """The homeserver's aiohttp application.

    ``signing_key`` defaults to the one in ``config.signing_key_path`` (created if
    missing); tests pass their own key and clock.
    """
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    install_http_layer(app)
    app[CONFIG] = config
    app[SIGNING_KEY] = (
        signing_key if signing_key is not None else load_or_create_signing_key(config.signing_key_path)
    )
    app[CLOCK_MS] = clock_ms
    for routes in (versions.routes, well_known.routes, version.routes, keys.routes):
        app.add_routes(routes)
    return app
