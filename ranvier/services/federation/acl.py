"""A room's server ACL, as the federation endpoints check it (Server-Server
API, "Server Access Control Lists (ACLs)"): from the room's current
``m.room.server_acl`` event, compiled once per ACL event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.core.server_acl import ServerAcl
from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

SERVER_ACL = ("m.room.server_acl", "")
#: Compiled ACLs kept, by ACL event ID (a few per room that has one).
MAX_CACHED_ACLS = 1000


class ServerAcls:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self._compiled: dict[str, ServerAcl] = {}

    async def for_room(self, room_id: str) -> ServerAcl | None:
        """The room's current ACL; None when it has none (every server allowed)."""
        events = self.hs.rooms.events
        event_id = (await events.current_state_ids(room_id, [SERVER_ACL])).get(SERVER_ACL)
        if event_id is None:
            return None
        acl = self._compiled.get(event_id)
        if acl is None:
            stored = await events.get_event(event_id)
            if stored is None:
                return None
            acl = ServerAcl.from_content(stored.event.content)
            if len(self._compiled) >= MAX_CACHED_ACLS:
                self._compiled.clear()
            self._compiled[event_id] = acl
        return acl

    async def check(self, origin: str, room_id: str) -> None:
        """403 ``M_FORBIDDEN`` when the room's ACL denies ``origin`` (every
        room-scoped federation request is checked, as in Synapse and Dendrite)."""
        acl = await self.for_room(room_id)
        if acl is not None and not acl.allows(origin):
            raise MatrixError(403, "M_FORBIDDEN", "Server is banned from room")
