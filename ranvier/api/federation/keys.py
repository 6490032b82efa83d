"""Key exchange (Server-Server API, "Retrieving server keys").

``GET /_matrix/key/v2/server`` ("Publishing Keys"): the server publishes its
verify key, signed by itself, valid for ``key_valid_for`` from now. Receiving
servers use the lesser of ``valid_until_ts`` and 7 days, so a longer setting
buys nothing.

``GET /_matrix/key/v2/query/{serverName}`` and ``POST /_matrix/key/v2/query``
("Querying Keys Through Another Server"): as a notary, the server answers with
other servers' key documents as it fetched them (refreshed when needed, the
last ones seen when a server is down), each additionally signed by itself;
about itself, with its own document. No authentication, as in the spec.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ranvier.api.client.sync import MAX_DB_INTEGER, query_int
from ranvier.api.http import (
    CLOCK_MS,
    CONFIG,
    HOMESERVER,
    SIGNING_KEY,
    json_response,
    read_json_object,
)
from ranvier.core.ids import is_valid_server_name
from ranvier.core.signing import SigningKey, encode_base64, sign_json
from ranvier.errors import MatrixError

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


# --- notary --------------------------------------------------------------------------

#: Servers one POST /query may ask about: each may cost a fetch from that server.
MAX_SERVERS_PER_QUERY = 100


def _server_name(value: str) -> str:
    if not is_valid_server_name(value):
        raise MatrixError(400, "M_INVALID_PARAM", f"{value!r} is not a valid server name.")
    return value


def _minimum_valid_until_ts(criteria: object, default: int) -> int:
    """One key's query criteria: ``{"minimum_valid_until_ts": int}``, both optional."""
    if not isinstance(criteria, dict):
        raise MatrixError(400, "M_BAD_JSON", "Query criteria must be objects.")
    value = criteria.get("minimum_valid_until_ts", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DB_INTEGER:
        raise MatrixError(400, "M_BAD_JSON", "minimum_valid_until_ts must be a timestamp.")
    return value


def _parse_bulk_query(body: dict[str, Any], now_ms: int) -> dict[str, tuple[list[str], int]]:
    """``server_keys`` → ``{server: (key IDs, minimum_valid_until_ts)}``; a
    server's minimum is the latest asked for any of its keys ("If not
    supplied, the notary server MUST use the current time")."""
    server_keys = body.get("server_keys")
    if not isinstance(server_keys, dict):
        raise MatrixError(400, "M_BAD_JSON", "server_keys must be an object.")
    if len(server_keys) > MAX_SERVERS_PER_QUERY:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"At most {MAX_SERVERS_PER_QUERY} servers per query."
        )
    queries: dict[str, tuple[list[str], int]] = {}
    for server_name, key_criteria in server_keys.items():
        if not isinstance(key_criteria, dict):
            raise MatrixError(400, "M_BAD_JSON", "Each server's key IDs must be an object.")
        minimums = [_minimum_valid_until_ts(c, now_ms) for c in key_criteria.values()]
        queries[_server_name(server_name)] = (list(key_criteria), max(minimums, default=now_ms))
    return queries


async def _notarised_documents(
    request: web.Request, server_name: str, key_ids: list[str], minimum_valid_until_ts: int
) -> list[dict[str, Any]]:
    """``server_name``'s key documents, each signed by us too."""
    config = request.app[CONFIG]
    key = request.app[SIGNING_KEY]
    if server_name == config.server_name:
        own = server_keys(config.server_name, key, request.app[CLOCK_MS](), config.key_valid_for)
        return [own]
    keyring = request.app[HOMESERVER].keyring
    documents = await keyring.key_documents(server_name, key_ids, minimum_valid_until_ts)
    return [sign_json(document, config.server_name, key) for document in documents]


@routes.get("/_matrix/key/v2/query/{server_name}")
async def query_server_keys(request: web.Request) -> web.Response:
    server_name = _server_name(request.match_info["server_name"])
    now_ms = request.app[CLOCK_MS]()
    minimum = query_int(request, "minimum_valid_until_ts", now_ms, maximum=MAX_DB_INTEGER)
    documents = await _notarised_documents(request, server_name, [], minimum)
    return json_response({"server_keys": documents})


@routes.post("/_matrix/key/v2/query")
async def bulk_query_server_keys(request: web.Request) -> web.Response:
    queries = _parse_bulk_query(await read_json_object(request), request.app[CLOCK_MS]())
    answers = await asyncio.gather(
        *(
            _notarised_documents(request, server_name, key_ids, minimum)
            for server_name, (key_ids, minimum) in queries.items()
        )
    )
    return json_response({"server_keys": [document for answer in answers for document in answer]})
