"""Pushers endpoints (Client-Server API, "Push Notifications"; pusher.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object

routes = web.RouteTableDef()


@routes.get("/_matrix/client/v3/pushers")
async def get_pushers(request: web.Request) -> web.Response:
    requester = await require_user(request)
    pushers = await request.app[HOMESERVER].pushers.get_pushers(requester.user_id)
    return json_response({"pushers": pushers})


@routes.post("/_matrix/client/v3/pushers/set")
async def set_pusher(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await request.app[HOMESERVER].pushers.set_pusher(requester, body)
    return json_response({})
