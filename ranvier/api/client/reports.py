"""Reporting content (Client-Server API, "Reporting Content"; report_content.yaml):
POST /rooms/{roomId}/report/{eventId}, /rooms/{roomId}/report (v1.13) and
/users/{userId}/report (v1.14). The rules are in ``services/reports.py``."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object

routes = web.RouteTableDef()

V3 = "/_matrix/client/v3"


@routes.post(V3 + "/rooms/{roomId}/report/{eventId}")
async def report_event(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await request.app[HOMESERVER].reports.report_event(
        requester.user_id, request.match_info["roomId"], request.match_info["eventId"], body
    )
    return json_response({})


@routes.post(V3 + "/rooms/{roomId}/report")
async def report_room(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await request.app[HOMESERVER].reports.report_room(
        requester.user_id, request.match_info["roomId"], body
    )
    return json_response({})


@routes.post(V3 + "/users/{userId}/report")
async def report_user(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await request.app[HOMESERVER].reports.report_user(
        requester.user_id, request.match_info["userId"], body
    )
    return json_response({})
