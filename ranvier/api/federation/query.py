"""Federation queries (Server-Server API, "Querying for information", "Device
Management", "End-to-End Encryption", "Public Room Directory", "Spaces",
"OpenID"): thin translations to ranvier/services/federation/queries.py.

Every endpoint but /openid/userinfo authenticates the calling server first
(X-Matrix); /openid/userinfo is called by third parties with the token itself.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.client.sync import query_int
from ranvier.api.federation.auth import authenticate_server
from ranvier.api.http import HOMESERVER, json_response
from ranvier.errors import MatrixError

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
    limit = query_int(request, "limit", 0, minimum=0, maximum=10_000) or None
    queries = request.app[HOMESERVER].federation_queries
    return json_response(await queries.public_rooms(limit, request.query.get("since"), None))


@routes.post(V1 + "/publicRooms")
async def query_public_rooms(request: web.Request) -> web.Response:
    authenticated = await authenticate_server(request)
    body = _object_body(authenticated.content)
    limit, since, search = body.get("limit"), body.get("since"), body.get("filter")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer.")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, "M_INVALID_PARAM", "since must be a string.")
    term = search.get("generic_search_term") if isinstance(search, dict) else None
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, "M_INVALID_PARAM", "generic_search_term must be a string.")
    queries = request.app[HOMESERVER].federation_queries
    return json_response(await queries.public_rooms(limit or None, since, term))


@routes.get(V1 + "/hierarchy/{roomId}")
async def hierarchy(request: web.Request) -> web.Response:
    origin = (await authenticate_server(request)).origin
    suggested_only = request.query.get("suggested_only", "false")
    if suggested_only not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "suggested_only must be true or false.")
    queries = request.app[HOMESERVER].federation_queries
    return json_response(
        await queries.hierarchy(origin, request.match_info["roomId"], suggested_only == "true")
    )


@routes.get(V1 + "/openid/userinfo")
async def openid_userinfo(request: web.Request) -> web.Response:
    # The Client-Server API's /user/{userId}/openid/request_token is not
    # implemented, so no token can be valid (server-server openid.yaml, 401).
    _required(request, "access_token")
    raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired.")
