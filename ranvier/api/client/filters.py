"""Filter upload and download (Client-Server API, "Filtering", filter.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.errors import MatrixError

routes = web.RouteTableDef()


@routes.post("/_matrix/client/v3/user/{userId}/filter")
async def define_filter(request: web.Request) -> web.Response:
    # Guests sync too, and /sync takes filters (Synapse allows guests here).
    requester = await require_user(request, allow_guest=True)
    user_id = request.match_info["userId"]
    if user_id != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", "Cannot create filters for other users")
    body = await read_json_object(request)
    filter_id = await request.app[HOMESERVER].filters.create_filter(user_id, body)
    return json_response({"filter_id": filter_id})


@routes.get("/_matrix/client/v3/user/{userId}/filter/{filterId}")
async def get_filter(request: web.Request) -> web.Response:
    # Guests sync too, and /sync takes filters (Synapse allows guests here).
    requester = await require_user(request, allow_guest=True)
    user_id = request.match_info["userId"]
    if user_id != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", "Cannot get filters for other users")
    definition = await request.app[HOMESERVER].filters.get_filter_json(
        user_id, request.match_info["filterId"]
    )
    if definition is None:
        raise MatrixError(404, "M_NOT_FOUND", "No such filter")
    return json_response(definition)
