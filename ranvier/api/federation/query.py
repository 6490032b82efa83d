"""Federation queries (Server-Server API, "Querying for information", "Device
Management", "End-to-End Encryption", "Public Room Directory", "Spaces",
"OpenID"): thin translations to ranvier/services/federation/queries.py.

Every endpoint but /openid/userinfo authenticates the calling server first
(X-Matrix); /openid/userinfo is called by third parties with the token itself.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.client.directory import parse_public_rooms_query, query_bool
from ranvier.api.federation.auth import authenticate_server
from ranvier.api.http import HOMESERVER, json_response
from ranvier.errors import MatrixError
from ranvier.services.directory import parse_public_rooms_body

routes = web.RouteTableDef()

V1 = "/_matrix/federation/v1"


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing query parameter {name!r}.")
    return value


def _object_body(content: Any) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise MatrixError(400, "M_BAD_JSON", "The body must be a JSON object.")
    return content


@routes.get(V1 + "/query/profile")
async def query_profile(request: web.Request) -> web.Response:
    await authenticate_server(request)
    user_id = _required(request, "user_id")
    field = request.query.get("field")
    queries = request.app[HOMESERVER].federation_queries
    return json_response(await queries.profile(user_id, field))


@routes.get(V1 + "/query/directory")
async def query_directory(request: web.Request) -> web.Response:
    await authenticate_server(request)
    alias = _required(request, "room_alias")
    return json_response(await request.app[HOMESERVER].federation_queries.directory(alias))


@routes.get(V1 + "/query/{queryType}")
async def query_other(request: web.Request) -> web.Response:
    """The generic form (Server-Server API, "Querying for information",
    queryInfo): the spec defines the ``directory`` and ``profile`` queries,
    routed above; any other type is one this server does not know, and says so
    to the authenticated caller as Synapse does (404 ``M_UNRECOGNIZED``)."""
    await authenticate_server(request)
    query_type = request.match_info["queryType"]
    raise MatrixError(404, "M_UNRECOGNIZED", f"Unknown query type {query_type!r}.")


@routes.get(V1 + "/user/devices/{userId}")
async def user_devices(request: web.Request) -> web.Response:
    await authenticate_server(request)
    queries = request.app[HOMESERVER].federation_queries
    return json_response(await queries.user_devices(request.match_info["userId"]))


@routes.post(V1 + "/user/keys/query")
async def user_keys_query(request: web.Request) -> web.Response:
    authenticated = await authenticate_server(request)
    body = _object_body(authenticated.content)
    return json_response(await request.app[HOMESERVER].federation_queries.user_keys_query(body))


@routes.post(V1 + "/user/keys/claim")
async def user_keys_claim(request: web.Request) -> web.Response:
    authenticated = await authenticate_server(request)
    body = _object_body(authenticated.content)
    return json_response(await request.app[HOMESERVER].federation_queries.user_keys_claim(body))


@routes.get(V1 + "/publicRooms")
async def get_public_rooms(request: web.Request) -> web.Response:
    await authenticate_server(request)
    query = parse_public_rooms_query(request)
    return json_response(await request.app[HOMESERVER].directory.local_public_rooms(query))


@routes.post(V1 + "/publicRooms")
async def query_public_rooms(request: web.Request) -> web.Response:
    authenticated = await authenticate_server(request)
    query = parse_public_rooms_body(_object_body(authenticated.content))
    return json_response(await request.app[HOMESERVER].directory.local_public_rooms(query))


@routes.get(V1 + "/hierarchy/{roomId}")
async def hierarchy(request: web.Request) -> web.Response:
    origin = (await authenticate_server(request)).origin
    suggested_only = query_bool(request, "suggested_only")
    spaces = request.app[HOMESERVER].spaces
    return json_response(
        await spaces.federation_hierarchy(origin, request.match_info["roomId"], suggested_only)
    )


@routes.get(V1 + "/openid/userinfo")
async def openid_userinfo(request: web.Request) -> web.Response:
    # Called by a third party with the token itself, not by a server: no X-Matrix.
    token = _required(request, "access_token")
    return json_response(await request.app[HOMESERVER].openid.userinfo(token))
