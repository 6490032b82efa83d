"""A local user joins a room: here when this server is in it, else over federation.

Client-Server API, ``POST /join/{roomIdOrAlias}`` and ``/rooms/{roomId}/join``:
``via`` (and the deprecated ``server_name``) name "the servers to attempt to
join the room through". When this server is not in the room — it does not
know it, or none of its users is joined any more — the join goes through
one of those servers (``JoinService.join_remote_room``: make_join/send_join),
tried in order: the ``via`` servers, then the servers a remote alias lookup
named, then the server of the alias and of the room ID (room versions 1-11;
a version 12 room ID names none).

An alias of another server is resolved with that server's
``GET /_matrix/federation/v1/query/directory`` (Server-Server API, "Querying
for information").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ranvier.core.ids import InvalidIdentifier, RoomAlias, is_mine, server_name_of
from ranvier.errors import MatrixError
from ranvier.services.federation.client import FederationError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)


async def resolve_remote_alias(hs: Homeserver, alias: str) -> tuple[str, list[str]]:
    """(room ID, servers in the room) from the alias's server; 404 ``M_NOT_FOUND``
    when it does not know the alias or cannot be reached."""
    try:
        domain = RoomAlias.parse(alias).domain
    except InvalidIdentifier as exc:
        raise MatrixError(400, "M_INVALID_PARAM", str(exc)) from None
    try:
        return await hs.federation_transport.query_directory(domain, alias)
    except MatrixError as exc:
        if exc.status == 404:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found") from None
        raise MatrixError(
            404, "M_NOT_FOUND", f"Room alias {alias} could not be resolved: {exc.error}"
        ) from None
    except FederationError as exc:
        logger.info("Resolving %s failed: %s", alias, exc)
        raise MatrixError(
            404, "M_NOT_FOUND", f"Room alias {alias} could not be resolved: {domain} unreachable"
        ) from None


def _candidate_servers(hs: Homeserver, *groups: Iterable[str | None]) -> list[str]:
    """The servers to try, in order, once each, never this one."""
    servers: list[str] = []
    for group in groups:
        for server in group:
            if server and server != hs.server_name and server not in servers:
                servers.append(server)
    return servers


async def _server_in_room(hs: Homeserver, room_id: str) -> bool:
    """Whether this server takes part in the room: one of its users is joined."""
    if not await hs.rooms.room_exists(room_id):
        return False
    return any(hs.rooms.is_local_user(user) for user in await hs.rooms.joined_user_ids(room_id))


async def join_room(
    hs: Homeserver,
    user_id: str,
    room_id_or_alias: str,
    via: Sequence[str] = (),
    *,
    reason: str | None = None,
    is_guest: bool = False,
) -> str:
    """Join ``room_id_or_alias`` as ``user_id``; the room ID."""
    alias_servers: list[str] = []
    alias_server: str | None = None
    if room_id_or_alias.startswith("#") and not is_mine(room_id_or_alias, hs.server_name):
        room_id, alias_servers = await resolve_remote_alias(hs, room_id_or_alias)
        alias_server = server_name_of(room_id_or_alias)
    else:
        room_id = await hs.rooms.resolve_room_id_or_alias(room_id_or_alias)
    if await _server_in_room(hs, room_id):
        return await hs.rooms.join(user_id, room_id, reason=reason, is_guest=is_guest)
    # Accepting an invite: the inviting server first (it is surely in the room).
    invited_via = await hs.federation_memberships.servers_for_pending_membership(user_id, room_id)
    servers = _candidate_servers(
        hs, [*(invited_via or []), *via], alias_servers, [alias_server, server_name_of(room_id)]
    )
    if not servers:
        # A room this server knows but left, and nowhere else to ask: join here
        # if the room's own state allows it; else the usual 404.
        return await hs.rooms.join(user_id, room_id, reason=reason, is_guest=is_guest)
    if is_guest:
        # The guest_access state of a room we are not in is unknown; Synapse
        # does not let guests join remote rooms either.
        raise MatrixError(403, "M_FORBIDDEN", "Guests cannot join rooms of other servers")
    return await hs.federation_joins.join_remote_room(user_id, room_id, servers)
