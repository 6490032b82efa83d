"""The published room directory and what rooms look like from outside
(Client-Server API, "Published room directory", "Room summaries" (MSC3266),
"Mutual rooms"; Server-Server API, "Public Room Directory").

The same code answers a local client (``GET/POST /publicRooms``) and another
server (``GET/POST /_matrix/federation/v1/publicRooms``); a client asking for
another server's directory (``server=``) is answered by that server through
federation.

Directory chunks are built per request from the published rooms' current
state and member counts (:mod:`ranvier.storage.directory`): two indexed,
batched queries over the published rooms only. Published rooms are few
(rooms are published one at a time by their admins), so this stays cheap
without a separate statistics table that every state change would have to
update.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.auth_rules import get_send_level, user_power_level
from ranvier.core.ids import RoomAlias, RoomID, UserID, is_valid_server_name, server_name_of
from ranvier.errors import MatrixError
from ranvier.services.federation.client import FederationResponseError
from ranvier.services.requester import Requester
from ranvier.storage.directory import DirectoryStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

DEFAULT_PUBLIC_ROOMS_LIMIT = 100
#: Bigger limits are clamped to this (a page never costs more than this many chunks).
MAX_PUBLIC_ROOMS_LIMIT = 500
MUTUAL_ROOMS_PAGE = 100
#: Join rules under which anyone may ask to join or knock, so the room may be
#: previewed (room_summary.yaml: "join rule of public, knock or knock_restricted").
PREVIEWABLE_JOIN_RULES = ("public", "knock", "knock_restricted")


# --- opaque pagination tokens ---------------------------------------------------------------


def encode_token(value: Mapping[str, Any]) -> str:
    """An opaque token: URL-safe base64 of JSON, without padding."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode("ascii").rstrip("=")


def decode_token(token: str, name: str) -> dict[str, Any]:
    """The object in a token; anything else is 400 M_INVALID_PARAM (never a 500)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise MatrixError(400, "M_INVALID_PARAM", f"Unknown {name} token.") from None
    if not isinstance(value, dict):
        raise MatrixError(400, "M_INVALID_PARAM", f"Unknown {name} token.")
    return value


# --- what a room looks like from outside ------------------------------------------------------


@dataclass(frozen=True)
class RoomInfo:
    """A room's summary state (event type → content), members and version."""

    room_id: str
    state: Mapping[str, Mapping[str, Any]]
    joined_members: int
    room_version: str | None

    def _field(self, event_type: str, key: str) -> Any:
        return self.state.get(event_type, {}).get(key)

    @property
    def join_rule(self) -> str:
        # No m.room.join_rules event: the auth rules treat the room as invite-only.
        value = self._field("m.room.join_rules", "join_rule")
        return value if isinstance(value, str) else "invite"

    @property
    def world_readable(self) -> bool:
        return bool(
            self._field("m.room.history_visibility", "history_visibility") == "world_readable"
        )

    @property
    def room_type(self) -> str | None:
        value = self._field("m.room.create", "type")
        return value if isinstance(value, str) else None

    @property
    def allowed_room_ids(self) -> list[str]:
        """Rooms whose members may join a restricted room (m.room.join_rules ``allow``)."""
        allow = self._field("m.room.join_rules", "allow")
        if self.join_rule not in ("restricted", "knock_restricted") or not isinstance(allow, list):
            return []
        return [
            entry["room_id"]
            for entry in allow
            if isinstance(entry, dict)
            and entry.get("type") == "m.room_membership"
            and isinstance(entry.get("room_id"), str)
        ]

    def chunk(self) -> dict[str, Any]:
        """A PublishedRoomsChunk (public_rooms.yaml), optional fields only when set."""
        chunk: dict[str, Any] = {
            "room_id": self.room_id,
            "num_joined_members": self.joined_members,
            "world_readable": self.world_readable,
            "guest_can_join": self._field("m.room.guest_access", "guest_access") == "can_join",
            "join_rule": self.join_rule,
        }
        optional = {
            "name": self._field("m.room.name", "name"),
            "topic": self._field("m.room.topic", "topic"),
            "canonical_alias": self._field("m.room.canonical_alias", "alias"),
            "avatar_url": self._field("m.room.avatar", "url"),
            "room_type": self.room_type,
        }
        chunk.update({k: v for k, v in optional.items() if isinstance(v, str) and v})
        return chunk

    def summary(self) -> dict[str, Any]:
        """The RoomSummary of room_summary.yaml (and of the federation hierarchy):
        the chunk plus version, encryption and the restricted-join rooms."""
        summary = self.chunk()
        algorithm = self._field("m.room.encryption", "algorithm")
        if isinstance(algorithm, str):
            summary["encryption"] = algorithm
        if self.room_version is not None:
            summary["room_version"] = self.room_version
        if allowed := self.allowed_room_ids:
            summary["allowed_room_ids"] = allowed
        return summary

    def matches(self, term: str | None, room_types: list[str | None] | None) -> bool:
        """publicRooms ``filter``: the search term (case-insensitive) in the name,
        topic, canonical alias or room ID; the room type one of ``room_types``
        (``None`` standing for rooms without a type)."""
        if room_types is not None and self.room_type not in room_types:
            return False
        if not term:
            return True
        needle = term.casefold()
        chunk = self.chunk()
        return any(
            needle in str(chunk.get(key, "")).casefold()
            for key in ("name", "topic", "canonical_alias", "room_id")
        )


@dataclass(frozen=True)
class PublicRoomsQuery:
    """A publicRooms request, validated (public_rooms.yaml)."""

    limit: int | None = None
    since: str | None = None
    search_term: str | None = None
    room_types: list[str | None] | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None

    def federation_body(self) -> dict[str, Any]:
        """The same query for another server's POST /publicRooms."""
        body: dict[str, Any] = {"include_all_networks": self.include_all_networks}
        if self.limit is not None:
            body["limit"] = self.limit
        if self.since is not None:
            body["since"] = self.since
        search: dict[str, Any] = {}
        if self.search_term is not None:
            search["generic_search_term"] = self.search_term
        if self.room_types is not None:
            search["room_types"] = self.room_types
        if search:
            body["filter"] = search
        if self.third_party_instance_id is not None:
            body["third_party_instance_id"] = self.third_party_instance_id
        return body


def parse_public_rooms_body(body: Mapping[str, Any]) -> PublicRoomsQuery:
    """The POST body of /publicRooms (client or federation); bad fields → 400."""
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer.")
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, "M_INVALID_PARAM", "since must be a string.")
    search = body.get("filter")
    if search is not None and not isinstance(search, dict):
        raise MatrixError(400, "M_INVALID_PARAM", "filter must be an object.")
    search = search or {}
    term = search.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, "M_INVALID_PARAM", "generic_search_term must be a string.")
    room_types = search.get("room_types")
    if room_types is not None and (
        not isinstance(room_types, list)
        or not all(t is None or isinstance(t, str) for t in room_types)
    ):
        raise MatrixError(400, "M_INVALID_PARAM", "room_types must be a list of strings or null.")
    include_all = body.get("include_all_networks", False)
    if not isinstance(include_all, bool):
        raise MatrixError(400, "M_INVALID_PARAM", "include_all_networks must be a boolean.")
    instance = body.get("third_party_instance_id")
    if instance is not None and not isinstance(instance, str):
        raise MatrixError(400, "M_INVALID_PARAM", "third_party_instance_id must be a string.")
    if include_all and instance is not None:
        # public_rooms.yaml: third_party_instance_id "cannot be used with include_all_networks".
        raise MatrixError(
            400,
            "M_INVALID_PARAM",
            "include_all_networks and third_party_instance_id exclude each other.",
        )
    return PublicRoomsQuery(limit or None, since, term, room_types, include_all, instance)


def _sort_key(chunk: Mapping[str, Any]) -> tuple[int, str]:
    # Largest rooms first, then by room ID: a total order, so keyset tokens are exact.
    return (-int(chunk["num_joined_members"]), str(chunk["room_id"]))


class DirectoryService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.server_name = hs.server_name
        self.store = DirectoryStore(hs.database)

    # --- room information -------------------------------------------------------------------

    async def room_infos(self, room_ids: Sequence[str]) -> dict[str, RoomInfo]:
        """What rooms we hold state for look like (rooms we know nothing of are absent)."""
        if not room_ids:
            return {}
        versions = await self.store.room_versions(room_ids)
        known = [room_id for room_id in room_ids if room_id in versions]
        if not known:
            return {}
        state = await self.store.summary_state(known)
        counts = await self.store.joined_counts(known)
        return {
            room_id: RoomInfo(room_id, state[room_id], counts.get(room_id, 0), versions[room_id])
            for room_id in known
            if state[room_id]  # a room we only heard of (no current state) is not ours to describe
        }

    async def room_info(self, room_id: str) -> RoomInfo | None:
        return (await self.room_infos([room_id])).get(room_id)

    async def has_local_members(self, room_id: str) -> bool:
        """We are in the room (some user of ours is joined), so our state is current."""
        return await self.store.has_joined_member_on(room_id, self.server_name)

    # --- the published directory ------------------------------------------------------------

    async def public_rooms(
        self, query: PublicRoomsQuery, server: str | None = None
    ) -> dict[str, Any]:
        """A page of a server's directory: ours, or another server's asked over federation."""
        if server is not None and server != self.server_name:
            return await self._remote_public_rooms(server, query)
        return await self.local_public_rooms(query)

    async def local_public_rooms(self, query: PublicRoomsQuery) -> dict[str, Any]:
        """Our directory, filtered, largest rooms first; ``next_batch`` and
        ``prev_batch`` are keyset tokens (the last/first room's sort key)."""
        if query.third_party_instance_id is not None:
            # No application service networks here: such a network lists no rooms.
            return {"chunk": [], "total_room_count_estimate": 0}
        infos = await self.room_infos(await self.store.published_room_ids())
        matching = [
            info.chunk()
            for info in infos.values()
            if info.matches(query.search_term, query.room_types)
        ]
        matching.sort(key=_sort_key)
        size = min(query.limit or DEFAULT_PUBLIC_ROOMS_LIMIT, MAX_PUBLIC_ROOMS_LIMIT)
        page, has_before, has_after = _page(matching, query.since, size)
        answer: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(matching)}
        if page and has_after:
            answer["next_batch"] = _boundary_token("f", page[-1])
        if page and has_before:
            answer["prev_batch"] = _boundary_token("b", page[0])
        return answer

    async def _remote_public_rooms(self, server: str, query: PublicRoomsQuery) -> dict[str, Any]:
        """Another server's directory (Server-Server API, "Public Room Directory"):
        POST when filtering, GET otherwise, as Synapse asks."""
        path = "/_matrix/federation/v1/publicRooms"
        client = self.hs.federation_client
        try:
            if query.search_term is None and query.room_types is None:
                params: dict[str, str] = {
                    "include_all_networks": str(query.include_all_networks).lower()
                }
                if query.limit is not None:
                    params["limit"] = str(query.limit)
                if query.since is not None:
                    params["since"] = query.since
                if query.third_party_instance_id is not None:
                    params["third_party_instance_id"] = query.third_party_instance_id
                answer = await client.request_json("GET", server, path, query=params)
            else:
                answer = await client.request_json(
                    "POST", server, path, content=query.federation_body()
                )
        except FederationResponseError as exc:
            # The server's own refusal (403, 404 ...) is passed on; its failures are
            # not ours to report as a 5xx (list_public_rooms.yaml lists no error).
            if 400 <= exc.status < 500 and exc.errcode is not None:
                raise MatrixError(exc.status, exc.errcode, f"{server} refused: {exc}") from None
            raise MatrixError(404, "M_NOT_FOUND", f"{server} answered {exc.status}.") from None
        except Exception as exc:  # any failure of the other server: it cannot say
            logger.info("publicRooms of %s failed: %s", server, exc)
            raise MatrixError(404, "M_NOT_FOUND", f"{server} could not be reached.") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
            raise MatrixError(404, "M_NOT_FOUND", f"{server} gave an invalid directory.")
        return answer

    # --- publishing ---------------------------------------------------------------------------

    async def get_visibility(self, room_id: str) -> str:
        room = await self.hs.rooms.require_room(room_id)
        return "public" if room.is_public else "private"

    async def set_visibility(self, requester: Requester, room_id: str, visibility: str) -> None:
        """PUT /directory/list/room/{roomId}. Who may publish follows
        ``directory.publish_rule`` (the spec leaves it to the server); taking a
        room out of the directory is for its admins (power to send
        m.room.canonical_alias, Synapse's rule) and server admins."""
        await self.hs.rooms.require_room(room_id)
        publish = visibility == "public"
        if publish:
            allowed = await self._may_publish(requester.user_id, room_id)
        else:
            allowed = await self._is_room_admin(requester.user_id, room_id)
        if not allowed:
            raise MatrixError(
                403, "M_FORBIDDEN", "You may not change this room's visibility in the directory."
            )
        await self.hs.rooms.store.set_room_is_public(room_id, publish)

    async def check_may_publish_new_room(self, user_id: str) -> None:
        """createRoom with ``visibility: public``: its creator is the room's admin,
        so only the ``server_admins`` rule can refuse (before anything is written)."""
        rule = self.hs.config.directory.publish_rule
        if rule == "server_admins" and not await self.hs.accounts.is_admin(user_id):
            raise MatrixError(403, "M_FORBIDDEN", "Only server admins may publish rooms.")

    async def _may_publish(self, user_id: str, room_id: str) -> bool:
        rule = self.hs.config.directory.publish_rule
        if await self.hs.accounts.is_admin(user_id):
            return True
        if rule == "server_admins":
            return False
        if rule == "joined_members":
            return await self.hs.rooms.get_membership(room_id, user_id) == "join"
        return await self._is_room_admin(user_id, room_id)

    async def _is_room_admin(self, user_id: str, room_id: str) -> bool:
        if await self.hs.accounts.is_admin(user_id):
            return True
        keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", user_id)]
        ids = await self.hs.rooms.events.current_state_ids(room_id, keys)
        loaded = await self.hs.rooms.events.get_events(ids.values())
        state = {key: loaded[eid].event for key, eid in ids.items() if eid in loaded}
        member = state.get(("m.room.member", user_id))
        return (
            member is not None
            and member.content.get("membership") == "join"
            and user_power_level(state, user_id)
            >= get_send_level(state, "m.room.canonical_alias", True)
        )

    # --- room summary (MSC3266) ---------------------------------------------------------------

    async def room_summary(
        self, requester: Requester | None, room_id_or_alias: str, via: Sequence[str]
    ) -> dict[str, Any]:
        """GET /room_summary/{roomIdOrAlias}: ours from current state when we are
        in the room, else asked of the ``via`` servers (their /hierarchy answer's
        room). A room the caller may not preview is 404, like an unknown one, so
        its existence is not revealed (room_summary.yaml lists only 404)."""
        room_id = await self._summary_room_id(room_id_or_alias)
        membership = (
            await self.hs.rooms.get_membership(room_id, requester.user_id)
            if requester is not None
            else None
        )
        info = await self.room_info(room_id) if await self.has_local_members(room_id) else None
        if info is not None:
            summary = info.summary()
        else:
            summary = await self._remote_summary(room_id, via)
        if not await self._may_preview(requester, membership, summary):
            raise MatrixError(404, "M_NOT_FOUND", "Room not found or not previewable.")
        if membership is not None and requester is not None:
            summary["membership"] = membership
        return summary

    async def _summary_room_id(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            if not RoomAlias.is_valid(room_id_or_alias):
                raise MatrixError(400, "M_INVALID_PARAM", "Not a room alias.")
            return await self.hs.rooms.resolve_room_id_or_alias(room_id_or_alias)
        if not RoomID.is_valid(room_id_or_alias):
            raise MatrixError(400, "M_INVALID_PARAM", "Not a room ID or alias.")
        return room_id_or_alias

    async def _may_preview(
        self, requester: Requester | None, membership: str | None, summary: Mapping[str, Any]
    ) -> bool:
        """Anyone may preview a room they could join or knock on or read; members
        and invitees their room; a restricted room's summary whoever is in one of
        its allowed rooms (MSC3266, "the room is restricted and the user is a
        member of one of the allowed rooms")."""
        if summary.get("join_rule", "public") in PREVIEWABLE_JOIN_RULES or summary.get(
            "world_readable"
        ):
            return True
        if requester is None:
            return False
        if membership in ("join", "invite", "knock"):
            return True
        return await self.in_any_room(requester.user_id, summary.get("allowed_room_ids") or [])

    async def in_any_room(self, user_id: str, room_ids: Iterable[str]) -> bool:
        wanted = set(room_ids)
        return bool(wanted) and any(
            r in wanted for r in await self.hs.rooms.joined_room_ids(user_id)
        )

    async def _remote_summary(self, room_id: str, via: Sequence[str]) -> dict[str, Any]:
        servers = [s for s in via if s != self.server_name and is_valid_server_name(s)]
        origin = server_name_of(room_id)  # room versions 1-11 name a server in the ID
        if not servers and origin is not None and origin != self.server_name:
            servers = [origin]
        for server in servers[:5]:
            answer = await self.hs.spaces.remote_hierarchy(server, room_id, suggested_only=False)
            if answer is not None and answer.room.get("room_id") == room_id:
                summary = {k: v for k, v in answer.room.items() if k != "children_state"}
                return summary
        raise MatrixError(404, "M_NOT_FOUND", "Room not found or not previewable.")

    # --- mutual rooms -------------------------------------------------------------------------

    async def mutual_rooms(
        self, requester: Requester, user_id: str, since: str | None
    ) -> dict[str, Any]:
        """GET /mutual_rooms: rooms both users are joined to, by room ID, in pages;
        ``from`` is the last room ID of the previous page (opaque)."""
        # mutual_rooms.yaml: a non-compliant (historical) user ID is a 400 too.
        if not UserID.is_valid(user_id, historical=False):
            raise MatrixError(400, "M_INVALID_PARAM", "The user ID provided was invalid.")
        if user_id == requester.user_id:
            raise MatrixError(
                400, "M_INVALID_PARAM", "You cannot ask for rooms shared with yourself."
            )
        after = ""
        if since is not None:
            token = decode_token(since, "from")
            after_value = token.get("after")
            if not isinstance(after_value, str):
                raise MatrixError(400, "M_INVALID_PARAM", "Unknown from token.")
            after = after_value
        mine = set(await self.hs.rooms.joined_room_ids(requester.user_id))
        theirs = set(await self.hs.rooms.joined_room_ids(user_id))
        shared = sorted(mine & theirs)
        remaining = [room_id for room_id in shared if room_id > after]
        page = remaining[:MUTUAL_ROOMS_PAGE]
        answer: dict[str, Any] = {"joined": page, "count": len(shared)}
        if len(remaining) > len(page):
            answer["next_batch"] = encode_token({"after": page[-1]})
        return answer


def _boundary_token(direction: str, chunk: Mapping[str, Any]) -> str:
    members, room_id = _sort_key(chunk)
    return encode_token({"d": direction, "m": -members, "r": room_id})


def _page(
    rooms: list[dict[str, Any]], since: str | None, size: int
) -> tuple[list[dict[str, Any]], bool, bool]:
    """``size`` rooms after (``d: f``) or before (``d: b``) the token's room in
    sort order; and whether rooms remain before and after the page."""
    if since is None:
        return rooms[:size], False, len(rooms) > size
    token = decode_token(since, "since")
    direction, members, room_id = token.get("d"), token.get("m"), token.get("r")
    if (
        direction not in ("f", "b")
        or isinstance(members, bool)
        or not isinstance(members, int)
        or not isinstance(room_id, str)
    ):
        raise MatrixError(400, "M_INVALID_PARAM", "Unknown since token.")
    boundary = (-members, room_id)
    if direction == "f":
        start = sum(1 for room in rooms if _sort_key(room) <= boundary)
        page = rooms[start : start + size]
        return page, start > 0, start + size < len(rooms)
    end = sum(1 for room in rooms if _sort_key(room) < boundary)
    begin = max(end - size, 0)
    return rooms[begin:end], begin > 0, end < len(rooms)
