"""PUT /_matrix/federation/v1/send/{txnId} (Server-Server API, "Transactions").

The HTTP side only: X-Matrix authentication, the body (depth-limited for a
transaction, MAX_TRANSACTION_DEPTH), its ``origin`` equal to the
authenticated one, at most 50 PDUs and 100 EDUs (400 ``M_BAD_JSON``, as
Synapse answers). De-duplication, one transaction per origin and the per-PDU
processing are ``services/federation/transactions.py``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.federation.auth import authenticate_server
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.core.input_limits import MAX_TRANSACTION_DEPTH
from ranvier.errors import MatrixError
from ranvier.services.federation.transactions import MAX_EDUS, MAX_PDUS

routes = web.RouteTableDef()


def _items(body: dict[str, Any], key: str, limit: int) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be an array")
    if len(value) > limit:
        raise MatrixError(400, "M_BAD_JSON", f"A transaction holds at most {limit} {key}")
    return value


@routes.put("/_matrix/federation/v1/send/{txnId}")
async def send_transaction(request: web.Request) -> web.Response:
    origin = (await authenticate_server(request)).origin
    body = await read_json_object(request, max_depth=MAX_TRANSACTION_DEPTH)
    if body.get("origin") != origin:
        raise MatrixError(400, "M_BAD_JSON", "The transaction's origin is not the signing server")
    if "pdus" not in body:
        raise MatrixError(400, "M_BAD_JSON", "Missing pdus")
    pdus = _items(body, "pdus", MAX_PDUS)
    edus = _items(body, "edus", MAX_EDUS)
    hs = request.app[HOMESERVER]
    answer = await hs.federation_transactions.on_transaction(
        origin, request.match_info["txnId"], pdus, edus
    )
    return json_response(answer)
