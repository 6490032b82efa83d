"""make_leave / send_leave (v1, v2) and make_knock / send_knock (Server-Server
API, "Leaving Rooms (Rejecting Invites)", "Knocking on rooms"); the work is in
ranvier/services/federation/memberships.py."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.federation.auth import authenticate_server
from ranvier.api.http import HOMESERVER, json_response

routes = web.RouteTableDef()
V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


@routes.get(V1 + "/make_leave/{roomId}/{userId}")
async def make_leave(request: web.Request) -> web.Response:
    return await _make(request, "leave")


@routes.get(V1 + "/make_knock/{roomId}/{userId}")
async def make_knock(request: web.Request) -> web.Response:
    return await _make(request, "knock")


async def _make(request: web.Request, kind: str) -> web.Response:
    origin = (await authenticate_server(request)).origin
    # make_knock's ``ver``: the room versions the knocking server supports.
    versions = request.query.getall("ver", []) if kind == "knock" else None
    answer = await request.app[HOMESERVER].federation_memberships.make_membership(
        kind, origin, request.match_info["roomId"], request.match_info["userId"], versions
    )
    return json_response(answer)


@routes.put(V2 + "/send_leave/{roomId}/{eventId}")
async def send_leave_v2(request: web.Request) -> web.Response:
    return json_response(await _send(request, "leave"))


@routes.put(V1 + "/send_leave/{roomId}/{eventId}")
async def send_leave_v1(request: web.Request) -> web.Response:
    # Deprecated v1: the same, answered as ``[200, {}]``.
    return json_response([200, await _send(request, "leave")])


@routes.put(V1 + "/send_knock/{roomId}/{eventId}")
async def send_knock(request: web.Request) -> web.Response:
    return json_response(await _send(request, "knock"))


async def _send(request: web.Request, kind: str) -> dict[str, object]:
    authenticated = await authenticate_server(request)
    return await request.app[HOMESERVER].federation_memberships.send_membership(
        kind,
        authenticated.origin,
        request.match_info["roomId"],
        request.match_info["eventId"],
        authenticated.content,
    )
