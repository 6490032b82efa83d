"""Relations and threads (relations.yaml, threads_list.yaml).

``GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]``
and ``GET /_matrix/client/v1/rooms/{roomId}/threads``. The work is in
ranvier/services/relations.py.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.room_history import direction_param
from ranvier.api.client.rooms import room_id_param
from ranvier.api.client.sync import query_int
from ranvier.api.http import HOMESERVER, json_items_response
from ranvier.core.ids import EventID
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

ROOM_V1 = "/_matrix/client/v1/rooms/{roomId}"
#: relations.yaml leaves the default and maximum to the server: Synapse's.
DEFAULT_RELATIONS_LIMIT = 5
MAX_RELATIONS_LIMIT = 1000
#: threads_list.yaml: "an integer greater than zero"; default and cap as Synapse.
DEFAULT_THREADS_LIMIT = 5
MAX_THREADS_LIMIT = 100


def _recurse_param(request: web.Request) -> bool | None:
    value = request.query.get("recurse")
    if value is None:
        return None
    if value == "true":
        return True
    if value == "false":
        return False
    raise MatrixError(400, "M_INVALID_PARAM", "recurse must be true or false")


async def _relations(
    request: web.Request, rel_type: str | None, event_type: str | None
) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    event_id = request.match_info["eventId"]
    if not EventID.is_valid(event_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{event_id!r} is not a valid event ID")
    direction: Literal["f", "b"] = (
        direction_param(request, required=False) if "dir" in request.query else "b"
    )
    limit = min(
        query_int(request, "limit", DEFAULT_RELATIONS_LIMIT, minimum=1), MAX_RELATIONS_LIMIT
    )
    hs = request.app[HOMESERVER]
    body = await hs.relations.relations(
        requester.user_id,
        requester.device_id,
        room_id,
        event_id,
        rel_type=rel_type,
        event_type=event_type,
        from_token=request.query.get("from") or None,
        to_token=request.query.get("to") or None,
        direction=direction,
        limit=limit,
        recurse=_recurse_param(request),
    )
    return json_items_response(body)


@routes.get(ROOM_V1 + "/relations/{eventId}")
async def get_relations(request: web.Request) -> web.Response:
    return await _relations(request, None, None)


@routes.get(ROOM_V1 + "/relations/{eventId}/{relType}")
async def get_relations_with_type(request: web.Request) -> web.Response:
    return await _relations(request, request.match_info["relType"], None)


@routes.get(ROOM_V1 + "/relations/{eventId}/{relType}/{eventType}")
async def get_relations_with_types(request: web.Request) -> web.Response:
    return await _relations(request, request.match_info["relType"], request.match_info["eventType"])


@routes.get(ROOM_V1 + "/threads")
async def get_threads(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    include = request.query.get("include", "all")
    if include not in ("all", "participated"):
        raise MatrixError(400, "M_INVALID_PARAM", "include must be all or participated")
    limit = min(query_int(request, "limit", DEFAULT_THREADS_LIMIT, minimum=1), MAX_THREADS_LIMIT)
    hs = request.app[HOMESERVER]
    body = await hs.relations.threads(
        requester.user_id,
        requester.device_id,
        room_id,
        include="participated" if include == "participated" else "all",
        from_token=request.query.get("from") or None,
        limit=limit,
    )
    return json_items_response(body)
