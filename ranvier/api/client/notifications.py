"""GET /notifications (Client-Server API, "Push Notifications", "Listing
notifications"; notifications.yaml): the events that notified the user."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response

routes = web.RouteTableDef()


@routes.get("/_matrix/client/v3/notifications")
async def get_notifications(request: web.Request) -> web.Response:
    requester = await require_user(request)
    query = request.query
    result = await request.app[HOMESERVER].push.notifications(
        requester.user_id, query.get("from"), query.get("limit"), query.get("only")
    )
    return json_response(result)
