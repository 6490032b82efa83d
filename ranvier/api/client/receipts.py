"""Receipts and read markers (Client-Server API, "Receipts", "Read and unread markers";
receipts.yaml, read_markers.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object

routes = web.RouteTableDef()


@routes.post("/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}")
async def post_receipt(request: web.Request) -> web.Response:
    requester = await require_user(request)
    # receipts.yaml: the body is required; it may carry only thread_id.
    body = await read_json_object(request)
    await request.app[HOMESERVER].receipts.post_receipt(
        requester.user_id,
        request.match_info["roomId"],
        request.match_info["receiptType"],
        request.match_info["eventId"],
        body.get("thread_id"),
    )
    return json_response({})


@routes.post("/_matrix/client/v3/rooms/{roomId}/read_markers")
async def set_read_markers(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await request.app[HOMESERVER].receipts.set_read_markers(
        requester.user_id, request.match_info["roomId"], body
    )
    return json_response({})
