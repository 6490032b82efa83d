"""PUT /_matrix/federation/v2/invite/{roomId}/{eventId} and its v1 form
(Server-Server API, "Inviting to a room"); the work is in
ranvier/services/federation/invites.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.federation.auth import authenticate_server
from ranvier.api.http import HOMESERVER, json_response
from ranvier.errors import MatrixError

routes = web.RouteTableDef()


async def _acl_check(request: web.Request, origin: str) -> None:
    """A room we are in may deny the inviting server by its ACL (Server-Server
    API, "Server Access Control Lists": invites are room-scoped requests);
    for a room we are not in we hold no ACL, and every server may invite."""
    await request.app[HOMESERVER].server_acls.check(origin, request.match_info["roomId"])


@routes.put("/_matrix/federation/v2/invite/{roomId}/{eventId}")
async def invite_v2(request: web.Request) -> web.Response:
    authenticated = await authenticate_server(request)
    await _acl_check(request, authenticated.origin)
    answer = await request.app[HOMESERVER].federation_invites.on_invite(
        authenticated.origin,
        request.match_info["roomId"],
        request.match_info["eventId"],
        authenticated.content,
    )
    return json_response(answer)


@routes.put("/_matrix/federation/v1/invite/{roomId}/{eventId}")
async def invite_v1(request: web.Request) -> web.Response:
    """Deprecated v1: the body is the event itself (stripped state in its
    ``unsigned.invite_room_state``), rooms of version 1 or 2 only (the body
    cannot say which: read as "1", as Synapse does), and the answer is
    ``[200, {"event": ...}]``."""
    authenticated = await authenticate_server(request)
    await _acl_check(request, authenticated.origin)
    pdu = authenticated.content
    if not isinstance(pdu, dict):
        raise MatrixError(400, "M_BAD_JSON", "The body must be an event")
    unsigned = pdu.get("unsigned")
    body: dict[str, Any] = {
        "room_version": "1",
        "event": {k: v for k, v in pdu.items() if k != "unsigned"},
        "invite_room_state": unsigned.get("invite_room_state")
        if isinstance(unsigned, dict)
        else None,
    }
    answer = await request.app[HOMESERVER].federation_invites.on_invite(
        authenticated.origin, request.match_info["roomId"], request.match_info["eventId"], body
    )
    return json_response([200, answer])
