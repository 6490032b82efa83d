"""GET /_matrix/key/v2/server (Server-Server API, "Publishing Keys").

The server publishes its verify key, signed by itself, valid for
``key_valid_for`` from now. Receiving servers use the lesser of
``valid_until_ts`` and 7 days, so a longer setting buys nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.http import CLOCK_MS, CONFIG, SIGNING_KEY, json_response
from ranvier.core.signing import SigningKey, encode_base64, sign_json

routes = web.RouteTableDef()


def server_keys(
    server_name: str, key: SigningKey, now_ms: int, valid_for_ms: int
) -> dict[str, Any]:
    """The signed key document of a server whose only key is ``key``."""
    document = {
        "server_name": server_name,
        "verify_keys": {key.key_id: {"key": encode_base64(key.verify_key)}},
        # Rotated-out keys will be listed here once key rotation exists.
        "old_verify_keys": {},
        "valid_until_ts": now_ms + valid_for_ms,
    }
    return sign_json(document, server_name, key)


@routes.get("/_matrix/key/v2/server")
async def get_server_keys(request: web.Request) -> web.Response:
    return _own_keys_response(request)


# Older versions of the federation API had a {keyId} path segment; it is gone from the
# spec, but Synapse still answers it (with all keys, ignoring the ID), so we do too.
@routes.get("/_matrix/key/v2/server/{key_id}")
async def get_server_keys_legacy(request: web.Request) -> web.Response:
    return _own_keys_response(request)


def _own_keys_response(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return json_response(
        server_keys(
            config.server_name,
            request.app[SIGNING_KEY],
            request.app[CLOCK_MS](),
            config.key_valid_for,
        )
    )

