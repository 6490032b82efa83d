"""Space hierarchies, room summaries and mutual rooms (Client-Server API,
"Spaces" GET /hierarchy; "Room summaries" GET /room_summary (MSC3266, v1.15);
GET /mutual_rooms): thin translations to ranvier/services/spaces.py and
ranvier/services/directory.py."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import access_token_from_request, require_user
from ranvier.api.client.directory import clamped_int, query_bool
from ranvier.api.http import HOMESERVER, json_response
from ranvier.errors import MatrixError
from ranvier.services.spaces import (
    DEFAULT_LIMIT,
    DEFAULT_MAX_DEPTH,
    MAX_DEPTH,
    MAX_LIMIT,
    HierarchyQuery,
)

routes = web.RouteTableDef()

V1 = "/_matrix/client/v1"


@routes.get(V1 + "/rooms/{roomId}/hierarchy")
async def get_space_hierarchy(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    query = HierarchyQuery(
        room_id=request.match_info["roomId"],
        suggested_only=query_bool(request, "suggested_only"),
        # space_hierarchy.yaml: limit "greater than zero", max_depth "non-negative";
        # larger values are clamped to the server's maximum.
        max_depth=clamped_int(request, "max_depth", DEFAULT_MAX_DEPTH, 0, MAX_DEPTH),
        limit=clamped_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        from_token=request.query.get("from"),
    )
    return json_response(await request.app[HOMESERVER].spaces.hierarchy(requester, query))


@routes.get(V1 + "/room_summary/{roomIdOrAlias}")
async def get_room_summary(request: web.Request) -> web.Response:
    """Authentication is optional: room_summary.yaml lets servers answer
    anonymous callers for rooms anyone could join, knock on or read, and the
    service previews only those without a user."""
    requester = None
    if access_token_from_request(request) is not None:
        requester = await require_user(request, allow_guest=True)
    via = request.query.getall("via", [])
    hs = request.app[HOMESERVER]
    summary = await hs.directory.room_summary(requester, request.match_info["roomIdOrAlias"], via)
    return json_response(summary)


@routes.get(V1 + "/mutual_rooms")
async def get_mutual_rooms(request: web.Request) -> web.Response:
    requester = await require_user(request)
    user_id = request.query.get("user_id")
    if user_id is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing query parameter 'user_id'.")
    hs = request.app[HOMESERVER]
    return json_response(
        await hs.directory.mutual_rooms(requester, user_id, request.query.get("from"))
    )
