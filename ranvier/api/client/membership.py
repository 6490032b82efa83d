"""Room membership: join, invite, leave, forget, kick, ban, unban, knock, joined_rooms.

Client-Server API: joining.yaml, inviting.yaml, leaving.yaml, kicking.yaml,
banning.yaml, knocking.yaml, list_joined_rooms.yaml,
third_party_membership.yaml. Joining a room this server is not in goes
over federation, through the ``via``/``server_name`` servers
(ranvier/services/federation/client_joins.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.client.rooms import ROOM, room_id_param
from ranvier.api.http import HOMESERVER, json_response, parse_json
from ranvier.core.ids import is_valid_server_name
from ranvier.errors import MatrixError
from ranvier.services.federation import client_joins

routes = web.RouteTableDef()


async def read_optional_object(request: web.Request) -> dict[str, Any]:
    """The JSON object body; an empty body counts as ``{}`` (clients send none)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
    return value


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "reason must be a string")
    return reason


def _target(body: dict[str, Any]) -> str:
    user_id = body.get("user_id")
    if user_id is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing user_id")
    if not isinstance(user_id, str):
        raise MatrixError(400, "M_BAD_JSON", "user_id must be a string")
    return user_id


def _via_servers(request: web.Request) -> list[str]:
    """``via`` (v1.12) and the deprecated ``server_name``: servers to join through."""
    servers = [*request.query.getall("via", []), *request.query.getall("server_name", [])]
    for server in servers:
        if not is_valid_server_name(server):
            raise MatrixError(400, "M_INVALID_PARAM", f"{server!r} is not a valid server name")
    return servers


@routes.post("/_matrix/client/v3/join/{roomIdOrAlias}")
async def join_room(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    body = await read_optional_object(request)
    room_id = await client_joins.join_room(
        request.app[HOMESERVER],
        requester.user_id,
        request.match_info["roomIdOrAlias"],
        _via_servers(request),
        reason=_reason(body),
        is_guest=requester.is_guest,
    )
    await request.app[HOMESERVER].room_upgrades.on_joined(requester.user_id, room_id)
    return json_response({"room_id": room_id})


@routes.post(ROOM + "/join")
async def join_room_by_id(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    body = await read_optional_object(request)
    await client_joins.join_room(
        request.app[HOMESERVER],
        requester.user_id,
        room_id,
        _via_servers(request),
        reason=_reason(body),
        is_guest=requester.is_guest,
    )
    await request.app[HOMESERVER].room_upgrades.on_joined(requester.user_id, room_id)
    return json_response({"room_id": room_id})


@routes.post("/_matrix/client/v3/knock/{roomIdOrAlias}")
async def knock_room(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_optional_object(request)
    hs = request.app[HOMESERVER]
    room_id = await hs.rooms.resolve_room_id_or_alias(request.match_info["roomIdOrAlias"])
    # knocking.yaml: servers to knock through (``via``; ``server_name`` deprecated).
    servers = request.query.getall("via", []) + request.query.getall("server_name", [])
    await hs.federation_memberships.knock_room(requester.user_id, room_id, servers, _reason(body))
    return json_response({"room_id": room_id})


@routes.post(ROOM + "/invite")
async def invite(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    body = await read_optional_object(request)
    hs = request.app[HOMESERVER]
    if "user_id" not in body and any(k in body for k in ("medium", "address", "id_server")):
        # inviteBy3PID: needs an identity server. Synapse answers 403 like
        # this when third-party lookups are disabled (enable_3pid_lookup).
        raise MatrixError(403, "M_FORBIDDEN", "Third-party invites are not enabled on this server")
    target = _target(body)
    await hs.rooms.update_membership(
        requester.user_id, room_id, target, "invite", reason=_reason(body)
    )
    return json_response({})


@routes.post(ROOM + "/leave")
async def leave(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    room_id = room_id_param(request)
    body = await read_optional_object(request)
    hs = request.app[HOMESERVER]
    await hs.rooms.update_membership(
        requester.user_id, room_id, requester.user_id, "leave", reason=_reason(body)
    )
    return json_response({})


@routes.post(ROOM + "/forget")
async def forget(request: web.Request) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    await read_optional_object(request)
    await request.app[HOMESERVER].rooms.forget(requester.user_id, room_id)
    return json_response({})


async def _moderate(request: web.Request, membership: str) -> web.Response:
    requester = await require_user(request)
    room_id = room_id_param(request)
    body = await read_optional_object(request)
    target = _target(body)
    reason = _reason(body)
    hs = request.app[HOMESERVER]
    await hs.rooms.require_local_room(room_id)
    if membership == "unban" and await hs.rooms.get_membership(room_id, target) != "ban":
        raise MatrixError(403, "M_FORBIDDEN", f"{target} is not banned from this room")
    await hs.rooms.update_membership(
        requester.user_id,
        room_id,
        target,
        "leave" if membership in ("kick", "unban") else membership,
        reason=reason,
    )
    return json_response({})


@routes.post(ROOM + "/kick")
async def kick(request: web.Request) -> web.Response:
    return await _moderate(request, "kick")


@routes.post(ROOM + "/ban")
async def ban(request: web.Request) -> web.Response:
    return await _moderate(request, "ban")


@routes.post(ROOM + "/unban")
async def unban(request: web.Request) -> web.Response:
    return await _moderate(request, "unban")


@routes.get("/_matrix/client/v3/joined_rooms")
async def joined_rooms(request: web.Request) -> web.Response:
    requester = await require_user(request, allow_guest=True)
    rooms = await request.app[HOMESERVER].rooms.joined_room_ids(requester.user_id)
    return json_response({"joined_rooms": rooms})
