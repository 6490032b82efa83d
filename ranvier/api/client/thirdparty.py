"""GET /_matrix/client/v3/thirdparty/protocols (Client-Server API, "Third-party Networks").

Protocols come from application services (bridges); with none registered the
answer is an empty object. The lookup endpoints are not served yet.
"""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import json_response

routes = web.RouteTableDef()


@routes.get("/_matrix/client/v3/thirdparty/protocols")
async def get_protocols(request: web.Request) -> web.Response:
    await require_user(request, allow_guest=True)
    return json_response({})
