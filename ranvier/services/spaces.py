"""Space hierarchies (Client-Server API, "Spaces", GET /hierarchy; Server-Server
API, "Spaces", GET /_matrix/federation/v1/hierarchy/{roomId}).

The client walk is depth-first (the spec: "when it encounters another space as
a child it recurses into that space before returning non-space children"),
children in the spec's order ("Ordering of children within a space"). Rooms
the user may not see are left out (and not walked into), but they stay in
their parent's ``children_state``. Loops are broken by never visiting a room
twice; depth is clamped to :data:`MAX_DEPTH` and one request visits at most
:data:`MAX_ROOMS_VISITED` rooms, so neither a loop nor a huge or deep tree
costs more than that.

Pagination is stateless: ``next_batch`` holds the root, ``max_depth``,
``suggested_only`` and the number of rooms already returned; the next request
walks the same tree again and skips those (bounded by the visit cap). A token
used with other parameters is refused (400 M_INVALID_PARAM, as the spec asks).

Rooms this server is not in are asked of the ``via`` servers of their
``m.space.child`` event through federation, once per request each.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ranvier.core.ids import RoomID, is_valid_server_name, server_name_of
from ranvier.errors import MatrixError
from ranvier.services.directory import (
    PREVIEWABLE_JOIN_RULES,
    RoomInfo,
    decode_token,
    encode_token,
)
from ranvier.services.requester import Requester

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

SPACE_CHILD = "m.space.child"
SPACE = "m.space"
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_MAX_DEPTH = 20
MAX_DEPTH = 20
#: Rooms one hierarchy request may look at (returned or not), pages skipped included.
MAX_ROOMS_VISITED = 1000
#: ``via`` servers tried for one remote room.
MAX_VIA_TRIED = 3
#: Other servers' hierarchy answers are kept this long (Spaces, "Server
#: behaviour": "The response to this endpoint should be cached for a period of
#: time"; Synapse keeps them 5 minutes), at most this many.
REMOTE_CACHE_MS = 5 * 60_000
REMOTE_CACHE_SIZE = 1000


@dataclass(frozen=True)
class HierarchyQuery:
    room_id: str
    suggested_only: bool = False
    max_depth: int = DEFAULT_MAX_DEPTH
    limit: int = DEFAULT_LIMIT
    from_token: str | None = None


@dataclass
class RemoteHierarchy:
    """Another server's answer to GET /hierarchy/{roomId}."""

    room: dict[str, Any]
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    inaccessible: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RoomEntry:
    """A room as the walk sees it: its summary and its children's events."""

    summary: dict[str, Any]
    children_state: list[dict[str, Any]]
    #: Rooms the holder of the room said we may not see (remote answers only).
    inaccessible: frozenset[str] = frozenset()

    def chunk(self) -> dict[str, Any]:
        return {**self.summary, "children_state": self.children_state}


def valid_order(content: Mapping[str, Any]) -> str | None:
    """``order`` when valid: a string of at most 50 printable ASCII characters."""
    order = content.get("order")
    if isinstance(order, str) and len(order) <= 50 and all(0x20 <= ord(c) <= 0x7E for c in order):
        return order
    return None


def child_sort_key(child: Mapping[str, Any]) -> tuple[int, str, int, str]:
    """The spec's order of children: valid ``order`` first (lexicographic), then
    the m.space.child event's origin_server_ts, then room ID."""
    order = valid_order(child["content"])
    ts = child.get("origin_server_ts")
    return (
        0 if order is not None else 1,
        order or "",
        ts if isinstance(ts, int) else 0,
        child["state_key"],
    )


def _via(content: Mapping[str, Any]) -> list[str]:
    via = content.get("via")
    if not isinstance(via, list):
        return []
    return [s for s in via if isinstance(s, str) and is_valid_server_name(s)]


class SpacesService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.server_name = hs.server_name
        #: (room ID, suggested_only) → (expiry ms, answer): successful answers only.
        self._remote_cache: OrderedDict[tuple[str, bool], tuple[int, RemoteHierarchy]] = (
            OrderedDict()
        )

    # --- the client's walk ------------------------------------------------------------------

    async def hierarchy(self, requester: Requester, query: HierarchyQuery) -> dict[str, Any]:
        if not RoomID.is_valid(query.room_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Not a room ID.")
        max_depth = min(query.max_depth, MAX_DEPTH)
        limit = min(query.limit, MAX_LIMIT)
        skip = self._skip_from_token(query, max_depth)
        walk = _Walk(self, requester, query.suggested_only)
        stack: list[tuple[str, int, list[str]]] = [(query.room_id, 0, [])]
        visited: set[str] = set()
        returned = 0
        rooms: list[dict[str, Any]] = []
        while stack and len(rooms) < limit and len(visited) < MAX_ROOMS_VISITED:
            room_id, depth, via = stack.pop()
            if room_id in visited:
                continue  # a loop, or a room met again deeper: once is enough
            visited.add(room_id)
            entry = await walk.entry(room_id, via)
            if entry is None:
                if room_id == query.room_id:
                    raise MatrixError(403, "M_FORBIDDEN", "You may not see or peek into this room.")
                continue
            returned += 1
            if returned > skip:
                rooms.append(entry.chunk())
            if depth < max_depth and entry.summary.get("room_type") == SPACE:
                children = [
                    c for c in entry.children_state if c["state_key"] not in entry.inaccessible
                ]
                for child in reversed(children):
                    stack.append((child["state_key"], depth + 1, _via(child["content"])))
        answer: dict[str, Any] = {"rooms": rooms}
        if stack and len(visited) < MAX_ROOMS_VISITED:
            answer["next_batch"] = encode_token(
                {"r": query.room_id, "d": max_depth, "s": query.suggested_only, "n": returned}
            )
        return answer

    @staticmethod
    def _skip_from_token(query: HierarchyQuery, max_depth: int) -> int:
        if query.from_token is None:
            return 0
        token = decode_token(query.from_token, "from")
        skip = token.get("n")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown from token.")
        if (token.get("r"), token.get("d"), token.get("s")) != (
            query.room_id,
            max_depth,
            query.suggested_only,
        ):
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                "The from token belongs to another room, max_depth or suggested_only.",
            )
        return skip

    # --- what we know of a room -------------------------------------------------------------

    async def local_entry(self, room_id: str, suggested_only: bool) -> RoomEntry | None:
        """A room we are in: its summary and its valid m.space.child events (with a
        non-empty ``via``), in the spec's order."""
        directory = self.hs.directory
        if not await directory.has_local_members(room_id):
            return None
        info = await directory.room_info(room_id)
        if info is None:
            return None
        return RoomEntry(info.summary(), await self._children_state(room_id, info, suggested_only))

    async def _children_state(
        self, room_id: str, info: RoomInfo, suggested_only: bool
    ) -> list[dict[str, Any]]:
        if info.room_type != SPACE:
            return []
        events = self.hs.rooms.events
        ids = await events.current_state_of_type(room_id, SPACE_CHILD)
        loaded = await events.get_events(ids.values())
        children: list[dict[str, Any]] = []
        for (_, state_key), event_id in ids.items():
            stored = loaded.get(event_id)
            if stored is None or not RoomID.is_valid(state_key):
                continue
            content = stored.event.content
            if not _via(content):
                continue  # no via: the child was removed (Spaces, "m.space.child")
            if suggested_only and content.get("suggested") is not True:
                continue
            children.append(
                {
                    "type": SPACE_CHILD,
                    "state_key": state_key,
                    "content": dict(content),
                    "sender": stored.event.sender,
                    "origin_server_ts": stored.event.origin_server_ts,
                }
            )
        children.sort(key=child_sort_key)
        return children

    async def user_may_see(
        self, requester: Requester, room_id: str, summary: Mapping[str, Any]
    ) -> bool:
        """The user could join, knock on or peek into the room, or is in it or
        invited (Spaces, "Server behaviour"; Synapse's accessibility rules)."""
        membership = await self.hs.rooms.get_membership(room_id, requester.user_id)
        if membership == "ban":
            return False
        if membership in ("join", "invite"):
            return True
        if summary.get("join_rule") in PREVIEWABLE_JOIN_RULES or summary.get("world_readable"):
            return True
        return await self.hs.directory.in_any_room(
            requester.user_id, summary.get("allowed_room_ids") or []
        )

    # --- over federation: serving ------------------------------------------------------------

    async def federation_hierarchy(
        self, origin: str, room_id: str, suggested_only: bool
    ) -> dict[str, Any]:
        """GET /_matrix/federation/v1/hierarchy/{roomId}: the room and those of its
        children we are in, split into the ones ``origin``'s users could see and
        the rest; 404 for a room we are not in or ``origin`` may not see."""
        entry = await self.local_entry(room_id, suggested_only)
        if entry is None or not await self._origin_may_see(origin, room_id, entry.summary):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room.")
        children: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for child in entry.children_state:
            child_id = child["state_key"]
            if not await self.hs.directory.has_local_members(child_id):
                continue  # not ours to describe: the asking server tries elsewhere
            info = await self.hs.directory.room_info(child_id)
            if info is None:
                continue
            summary = info.summary()
            if await self._origin_may_see(origin, child_id, summary):
                children.append(summary)
            else:
                inaccessible.append(child_id)
        return {"room": entry.chunk(), "children": children, "inaccessible_children": inaccessible}

    async def _origin_may_see(self, origin: str, room_id: str, summary: Mapping[str, Any]) -> bool:
        """Some user of ``origin`` could join, knock or peek: a public, knockable or
        world-readable room, one ``origin`` is in, or a restricted one (the asking
        server checks ``allowed_room_ids`` against its user, as Synapse does)."""
        if summary.get("join_rule") in PREVIEWABLE_JOIN_RULES or summary.get("world_readable"):
            return True
        if summary.get("allowed_room_ids"):
            return True
        return origin in await self.hs.federation_queries.servers_in_room(room_id)

    # --- over federation: asking ------------------------------------------------------------

    async def remote_hierarchy(
        self, server: str, room_id: str, suggested_only: bool
    ) -> RemoteHierarchy | None:
        """Another server's view of a room (cached for :data:`REMOTE_CACHE_MS`
        whichever server gave it), or None when it cannot or will not say."""
        key = (room_id, suggested_only)
        now = self.hs.clock_ms()
        cached = self._remote_cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = await self.hs.federation_client.request_json(
                "GET",
                server,
                f"/_matrix/federation/v1/hierarchy/{quote(room_id, safe='')}",
                query={"suggested_only": "true" if suggested_only else "false"},
            )
        except Exception as exc:  # any failure of the other server: it cannot say
            logger.info("hierarchy of %s from %s failed: %s", room_id, server, exc)
            return None
        parsed = _parse_remote_hierarchy(room_id, answer)
        if parsed is not None:
            self._remote_cache[key] = (now + REMOTE_CACHE_MS, parsed)
            self._remote_cache.move_to_end(key)
            while len(self._remote_cache) > REMOTE_CACHE_SIZE:
                self._remote_cache.popitem(last=False)
        return parsed


class _Walk:
    """One hierarchy request: the user, and the remote answers met so far."""

    def __init__(self, spaces: SpacesService, requester: Requester, suggested_only: bool) -> None:
        self.spaces = spaces
        self.requester = requester
        self.suggested_only = suggested_only
        #: room ID → summary given by a remote parent's answer, and the rooms it hid.
        self.remote_children: dict[str, dict[str, Any]] = {}
        self.remote_inaccessible: set[str] = set()

    async def entry(self, room_id: str, via: Sequence[str]) -> RoomEntry | None:
        """The room, if the user may see it (local state wins over remote answers)."""
        local = await self.spaces.local_entry(room_id, self.suggested_only)
        if local is not None:
            if await self.spaces.user_may_see(self.requester, room_id, local.summary):
                return local
            return None
        if room_id in self.remote_inaccessible:
            return None
        entry = await self._remote_entry(room_id, via)
        if entry is None or not await self.spaces.user_may_see(
            self.requester, room_id, entry.summary
        ):
            return None
        return entry

    async def _remote_entry(self, room_id: str, via: Sequence[str]) -> RoomEntry | None:
        known = self.remote_children.get(room_id)
        if known is not None and known.get("room_type") != SPACE:
            return RoomEntry(known, [])  # a plain room: its parent's answer says all we need
        servers = [s for s in via if s != self.spaces.server_name][:MAX_VIA_TRIED]
        # No via (the root of the walk): the server in a room ID of versions 1-11.
        origin = server_name_of(room_id)
        if not servers and origin is not None and origin != self.spaces.server_name:
            servers = [origin]
        for server in servers:
            answer = await self.spaces.remote_hierarchy(server, room_id, self.suggested_only)
            if answer is None:
                continue
            self.remote_children.update(answer.children)
            self.remote_inaccessible |= answer.inaccessible
            summary = {k: v for k, v in answer.room.items() if k != "children_state"}
            children = [c for c in answer.room.get("children_state", []) if _valid_child_event(c)]
            if self.suggested_only:
                children = [c for c in children if c["content"].get("suggested") is True]
            children.sort(key=child_sort_key)
            return RoomEntry(summary, children, frozenset(answer.inaccessible))
        return None


def _valid_child_event(child: Any) -> bool:
    return (
        isinstance(child, dict)
        and child.get("type") == SPACE_CHILD
        and isinstance(child.get("state_key"), str)
        and RoomID.is_valid(child["state_key"])
        and isinstance(child.get("content"), dict)
        and bool(_via(child["content"]))
    )


def _valid_summary(summary: Any) -> bool:
    return (
        isinstance(summary, dict)
        and isinstance(summary.get("room_id"), str)
        and isinstance(summary.get("num_joined_members"), int)
    )


def _parse_remote_hierarchy(room_id: str, answer: Any) -> RemoteHierarchy | None:
    """The parts of a remote answer that make sense; None if its room is wrong."""
    if not isinstance(answer, dict):
        return None
    room = answer.get("room")
    if not isinstance(room, dict) or not _valid_summary(room) or room["room_id"] != room_id:
        return None
    if not isinstance(room.get("children_state"), list):
        room = {**room, "children_state": []}
    children_list = answer.get("children")
    children = {
        child["room_id"]: {k: v for k, v in child.items() if k != "children_state"}
        for child in (children_list if isinstance(children_list, list) else [])
        if _valid_summary(child)
    }
    hidden = answer.get("inaccessible_children")
    inaccessible = {r for r in (hidden if isinstance(hidden, list) else []) if isinstance(r, str)}
    return RemoteHierarchy(room, children, inaccessible)
