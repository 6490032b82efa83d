"""/.well-known/matrix/client, /.well-known/matrix/server and /.well-known/matrix/support.

Client-Server API, "Well-known URIs", and Server-Server API, "Server discovery".
Both documents are served only when configured (``well_known.client_base_url``,
``well_known.server``); otherwise the answer is 404 M_NOT_FOUND. That is what the
spec's discovery flows expect of a server with nothing to announce: a client
treats a 404 as IGNORE and uses the server name's hostname as it is, and a server
goes on to SRV records and port 8448. Guessing a URL from the listener instead
(usually 127.0.0.1 behind a reverse proxy) would send clients to the wrong place,
which is worse than saying nothing. Synapse likewise serves these only when told to.
"""

from __future__ import annotations

from aiohttp import web

from ranvier.api.http import CONFIG, json_response
from ranvier.errors import MatrixError

routes = web.RouteTableDef()


@routes.get("/.well-known/matrix/client")
async def get_client_well_known(request: web.Request) -> web.Response:
    base_url = request.app[CONFIG].well_known.client_base_url
    if base_url is None:
        raise MatrixError(404, "M_NOT_FOUND", "No client discovery information configured")
    return json_response({"m.homeserver": {"base_url": base_url}})


@routes.get("/.well-known/matrix/server")
async def get_server_well_known(request: web.Request) -> web.Response:
    delegated = request.app[CONFIG].well_known.server
    if delegated is None:
        raise MatrixError(404, "M_NOT_FOUND", "No server delegation configured")
    return json_response({"m.server": delegated})


@routes.get("/.well-known/matrix/support")
async def get_support_well_known(request: web.Request) -> web.Response:
    """Client-Server API, "Getting the support information" (v1.10): the
    configured admin contacts and support page; 404 when neither is set."""
    well_known = request.app[CONFIG].well_known
    if not well_known.support_contacts and well_known.support_page is None:
        raise MatrixError(404, "M_NOT_FOUND", "No support information configured")
    body: dict[str, object] = {}
    if well_known.support_contacts:
        body["contacts"] = [dict(contact) for contact in well_known.support_contacts]
    if well_known.support_page is not None:
        body["support_page"] = well_known.support_page
    return json_response(body)
