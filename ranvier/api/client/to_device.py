"""PUT /sendToDevice (Client-Server API, "Send-to-Device messaging"; OpenAPI to_device.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.errors import MatrixError
from ranvier.services.to_device import event_type_or_400

routes = web.RouteTableDef()


@routes.put("/_matrix/client/v3/sendToDevice/{event_type}/{txn_id}")
async def send_to_device(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    hs = request.app[HOMESERVER]
    event_type = event_type_or_400(request.match_info["event_type"])
    body = await read_json_object(request)
    if "messages" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'messages'.")
    await hs.to_device.send(requester, event_type, request.match_info["txn_id"], body.get("messages"))
    return json_response({})
