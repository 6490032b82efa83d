"""Server-side search and the user directory (Client-Server API, "Server Side
Search", search.yaml; "User directory", users.yaml). The work is in
ranvier/services/search.py and ranvier/services/user_directory.py."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_items_response, json_response, read_json_object

routes = web.RouteTableDef()


@routes.post("/_matrix/client/v3/search")
async def search(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=False)
    body = await read_json_object(request)
    result = await request.app[HOMESERVER].search.search(
        requester.user_id, requester.device_id, body, request.query.get("next_batch")
    )
    return json_items_response(result)


@routes.post("/_matrix/client/v3/user_directory/search")
async def search_user_directory(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=False)
    body = await read_json_object(request)
    result = await request.app[HOMESERVER].user_directory.search(requester.user_id, body)
    return json_response(result)
