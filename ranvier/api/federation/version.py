"""GET /_matrix/federation/v1/version (Server-Server API, "Server implementation")."""

from __future__ import annotations

from aiohttp import web

import ranvier
from ranvier.api.http import json_response

routes = web.RouteTableDef()

SERVER_IMPLEMENTATION = {"name": "Ranvier", "version": ranvier.__version__}


@routes.get("/_matrix/federation/v1/version")
async def get_version(request: web.Request) -> web.Response:
    return json_response({"server": SERVER_IMPLEMENTATION})
