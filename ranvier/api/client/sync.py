"""``GET /_matrix/client/v3/sync`` (Client-Server API, "Syncing"; sync.yaml).

Parses and validates the query; ranvier/services/sync.py does the work.
"""

from __future__ import annotations

import re

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_items_response
from ranvier.errors import MatrixError
from ranvier.services.sync import InvalidToken, SyncParams, SyncToken

routes = web.RouteTableDef()

PRESENCE_STATES = ("online", "offline", "unavailable")


def query_bool(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false")
    return value == "true"


#: The largest integer the databases store (a signed 64-bit column).
MAX_DB_INTEGER = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,30}")


def query_int(
    request: web.Request, name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    """An integer query parameter (ASCII digits, optional minus sign); 400
    ``M_INVALID_PARAM`` when it is not one or is out of ``[minimum, maximum]``."""
    value = request.query.get(name)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer")
    number = int(value)
    if number < minimum:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be at most {maximum}")
    return number


@routes.get("/_matrix/client/v3/sync")
async def sync(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    since_text = request.query.get("since")
    since = None
    if since_text:
        try:
            since = SyncToken.parse(since_text)
        except InvalidToken:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"Invalid since token {since_text!r}"
            ) from None
    set_presence = request.query.get("set_presence")
    if set_presence is not None and set_presence not in PRESENCE_STATES:
        raise MatrixError(
            400, "M_INVALID_PARAM", "set_presence must be one of online, offline, unavailable"
        )
    params = SyncParams(
        user_id=requester.user_id,
        device_id=requester.device_id,
        filter=await hs.filters.resolve_filter_param(
            requester.user_id, request.query.get("filter")
        ),
        since=since,
        full_state=query_bool(request, "full_state"),
        # A negative timeout is read as 0, as Synapse does.
        timeout_ms=max(query_int(request, "timeout", 0, minimum=-(2**62)), 0),
        set_presence=set_presence,
    )
    return json_items_response(await hs.sync.sync(params))
