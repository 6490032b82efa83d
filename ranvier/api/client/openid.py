"""OpenID tokens (Client-Server API, "OpenID", openid.yaml): a thin translation
to ranvier/services/openid.py."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object

routes = web.RouteTableDef()


@routes.post("/_matrix/client/v3/user/{userId}/openid/request_token")
async def request_openid_token(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await read_json_object(request)  # the body is an empty object; anything else is 400
    openid = request.app[HOMESERVER].openid
    return json_response(await openid.request_token(requester, request.match_info["userId"]))
