"""Profiles (Client-Server API, "Profiles"; data/api/client-server/profile.yaml)."""

from __future__ import annotations

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.errors import MatrixError
from ranvier.services.requester import Requester

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


def _check_guest_field(requester: Requester, key: str) -> None:
    """Client-Server API, "Guest Access": "Guest users may only modify their
    display name; other profile fields may not be changed" (PUT and, since
    v1.16, DELETE)."""
    if requester.is_guest and key != "displayname":
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may only change displayname.")


@routes.put(PROFILE + "/{keyName}")
async def set_profile_field(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    key = request.match_info["keyName"]
    _check_guest_field(requester, key)
    body = await read_json_object(request)
    if key not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing {key!r} in the request body")
    await request.app[HOMESERVER].profiles.set_field(
        requester.user_id, request.match_info["userId"], key, body[key]
    )
    return json_response({})


@routes.delete(PROFILE + "/{keyName}")
async def delete_profile_field(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    _check_guest_field(requester, request.match_info["keyName"])
    await request.app[HOMESERVER].profiles.delete_field(
        requester.user_id, request.match_info["userId"], request.match_info["keyName"]
    )
    return json_response({})
