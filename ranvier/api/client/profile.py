"""Profiles (Client-Server API, "Profiles"; data/api/client-server/profile.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, MatrixError, json_response, read_json_object

routes = web.RouteTableDef()

PROFILE = "/_matrix/client/v3/profile/{userId}"


@routes.get(PROFILE)
async def get_profile(request: web.Request) -> web.Response:
    profile = await request.app[HOMESERVER].profiles.get_profile(request.match_info["userId"])
    return json_response(profile)


@routes.get(PROFILE + "/{keyName}")
async def get_profile_field(request: web.Request) -> web.Response:
    key = request.match_info["keyName"]
    value = await request.app[HOMESERVER].profiles.get_field(request.match_info["userId"], key)
    return json_response({key: value})


@routes.put(PROFILE + "/{keyName}")
async def set_profile_field(request: web.Request) -> web.Response:
    requester = await require_user(request)
    key = request.match_info["keyName"]
    body = await read_json_object(request)
    if key not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing {key!r} in the request body")
    await request.app[HOMESERVER].profiles.set_field(
        requester.user_id, request.match_info["userId"], key, body[key]
    )
    return json_response({})


@routes.delete(PROFILE + "/{keyName}")
async def delete_profile_field(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await request.app[HOMESERVER].profiles.delete_field(
        requester.user_id, request.match_info["userId"], request.match_info["keyName"]
    )
    return json_response({})
