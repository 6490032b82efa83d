"""Who is calling: X-Matrix authentication of inbound federation requests.

Server-Server API, "Request Authentication": the ``Authorization: X-Matrix``
header names the origin server, the destination (if given, it must be us:
otherwise "401 Unauthorized"), the origin's key and a signature over the
method, the request target as received (path and query), origin, destination
and JSON body. The signature is checked with the origin's current key, valid
now and fetched from the origin itself (MSC4029; ranvier/services/federation/
keyring.py). Every failure is 401 ``M_UNAUTHORIZED``, as Synapse answers; a
body that is not JSON is 400 ``M_NOT_JSON``.

Endpoints call ``origin = (await authenticate_server(request)).origin`` first
and use the returned ``content`` rather than parsing the body again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ranvier.api.http import HOMESERVER
from ranvier.core.x_matrix import XMatrixError, is_x_matrix, parse_header, verify_request
from ranvier.errors import MatrixError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthenticatedRequest:
    #: The server that signed the request.
    origin: str
    #: The parsed JSON body the signature covered; None when there was no body.
    content: Any


def _unauthorized(message: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", message)


async def _content(request: web.Request) -> Any:
    """The parsed JSON body, or None for an empty one (nothing to sign)."""
    body = await request.read()
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_NOT_JSON", "Content not JSON.") from None


async def authenticate_server(request: web.Request) -> AuthenticatedRequest:
    """The verified origin of a federation request, or 401 ``M_UNAUTHORIZED``."""
    headers = [h for h in request.headers.getall("Authorization", []) if is_x_matrix(h)]
    if not headers:
        raise _unauthorized("Missing X-Matrix Authorization header.")
    try:
        authorization = parse_header(headers[0])
    except XMatrixError as exc:
        raise _unauthorized(f"Invalid X-Matrix Authorization header: {exc}.") from None
    hs = request.app[HOMESERVER]
    if authorization.destination is not None and authorization.destination != hs.server_name:
        raise _unauthorized("The X-Matrix destination is not this server.")
    content = await _content(request)
    key = await hs.keyring.get_request_key(authorization.origin, authorization.key_id)
    if key is None:
        raise _unauthorized(
            f"No current key {authorization.key_id} of {authorization.origin} could be found."
        )
    try:
        verify_request(
            authorization, hs.server_name, request.method, request.raw_path, content, key.key
        )
    except XMatrixError:
        logger.info(
            "Bad X-Matrix signature from %s on %s %s",
            authorization.origin,
            request.method,
            request.rel_url.raw_path,
        )
        raise _unauthorized("Invalid X-Matrix signature.") from None
    if hs.federation_sender is not None:
        # The origin is up: end its backoff and send what waits for it
        # (Synapse resets retry timings on any authenticated request).
        await hs.federation_sender.on_inbound_request(authorization.origin)
    return AuthenticatedRequest(authorization.origin, content)
