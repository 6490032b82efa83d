"""Leaving and knocking over federation, on both sides.

Server-Server API, "Leaving Rooms (Rejecting Invites)" and "Knocking on
rooms": the same two-step dance as joins (ranvier/services/federation/joins.py).

* As the **resident** server: ``make_leave``/``make_knock`` answer a template
  built on the room's current head (checked against the auth rules now, so the
  other server learns of a refusal before it signs anything);
  ``send_leave``/``send_knock`` check that the signed event is the membership
  it claims (room of the path: CVE-2020-26257; sender of the requesting
  server; state_key the sender), receive it like any PDU, pass it on to the
  room's other servers; a knock is answered with the room's stripped state.
* As the **leaving or knocking** server, for a room this server is not in: a
  user rejects an invite (or rescinds a knock) through the server that sent it;
  a user knocks through the servers the client names. The signed event is kept
  as an outlier with the user's new membership (and, for a knock, the stripped
  state the resident sent), as invites are (``store_membership_outlier``).

An invite whose server cannot be reached is still rejected here (a leave of our
own, kept locally), so that the user is not stuck with it: Synapse does the
same ("locally rejecting" an invite).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.ids import server_name_of
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from ranvier.core.stripped_state import sanitize_stripped_state
from ranvier.errors import MatrixError
from ranvier.services.federation.events import (
    FederationEventHandler,
    PduCheckFailed,
)
from ranvier.services.federation.invites import (
    RemoteMemberships,
    remote_error,
    store_membership_outlier,
)
from ranvier.services.federation.joins import check_membership_event
from ranvier.services.federation.verify import PduChecker
from ranvier.services.rooms import MEMBER, EventSpec
from ranvier.storage.events import StoredEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: The memberships this module carries, with the room versions they need.
KINDS = ("leave", "knock")


class _NoRemoteEvents:
    """For a handler built here before the real transport is wired: a leave or
    knock built on our own make_leave/make_knock template refers only to events
    we hold, so nothing is ever fetched; asking is a failure, not a hang."""

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        earliest_events: Sequence[str],
        latest_events: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> list[Mapping[str, Any]]:
        raise PduCheckFailed("no federation transport to fetch missing events")

    async def state_ids(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]:
        raise PduCheckFailed("no federation transport to fetch state")

    async def event(self, destination: str, event_id: str) -> Mapping[str, Any] | None:
        raise PduCheckFailed("no federation transport to fetch events")


class FederationMemberships:
    def __init__(
        self, hs: Homeserver, remote: RemoteMemberships, checker: PduChecker | None = None
    ) -> None:
        self.hs = hs
        self.remote = remote
        self.checker = checker if checker is not None else PduChecker(hs.keyring)
        self._fallback_handler: FederationEventHandler | None = None

    def _event_handler(self) -> FederationEventHandler:
        """``hs.federation_events`` when the server federates, else one of our own."""
        wired = getattr(self.hs, "federation_events", None)
        if isinstance(wired, FederationEventHandler):
            return wired
        if self._fallback_handler is None:
            self._fallback_handler = FederationEventHandler(
                self.hs, _NoRemoteEvents(), self.checker.verify
            )
        return self._fallback_handler

    async def server_in_room(self, room_id: str) -> bool:
        """Whether one of our users is joined: the room's events reach us."""
        return any(
            self.hs.rooms.is_local_user(user_id)
            for user_id in await self.hs.rooms.joined_user_ids(room_id)
        )

    # --- resident side -----------------------------------------------------------------

    async def make_membership(
        self, kind: str, origin: str, room_id: str, user_id: str, versions: Iterable[str] | None
    ) -> dict[str, Any]:
        """GET /make_leave, /make_knock: ``{"room_version", "event"}``, unsigned."""
        if server_name_of(user_id) != origin:
            raise MatrixError(403, "M_FORBIDDEN", "The user is not of the requesting server")
        rooms = self.hs.rooms
        room = await rooms.store.get_room(room_id)
        if room is None or not await self.server_in_room(room_id):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        version = get_room_version(room.room_version)
        if kind == "knock":
            self._check_knock_version(version, origin, versions)
        async with rooms.room_lock(room_id):
            head = await rooms.load_head(room)
            spec = EventSpec(MEMBER, {"membership": kind}, user_id)
            template = await rooms.draft_event(head, user_id, spec)
            await rooms.check_draft(head, Event.from_pdu(version, template))
        return {"room_version": room.room_version, "event": template}

    @staticmethod
    def _check_knock_version(
        version: RoomVersion, origin: str, versions: Iterable[str] | None
    ) -> None:
        if not version.knock_join_rule:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Room version {version.identifier} does not support knocking",
                room_version=version.identifier,
            )
        if versions is not None and version.identifier not in set(versions):
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"The room's version {version.identifier} is not supported by {origin}",
                room_version=version.identifier,
            )

    async def send_membership(
        self, kind: str, origin: str, room_id: str, event_id: str, pdu: object
    ) -> dict[str, Any]:
        """PUT /send_leave, /send_knock: receive the signed event. A knock is
        answered with ``knock_room_state``; a leave with ``{}``."""
        rooms = self.hs.rooms
        room = await rooms.store.get_room(room_id)
        if room is None or not await self.server_in_room(room_id):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        if not isinstance(pdu, dict):
            raise MatrixError(400, "M_BAD_JSON", f"The {kind} event must be an object")
        version = get_room_version(room.room_version)
        try:
            event = await self.checker.verify(version, pdu)
        except PduCheckFailed as exc:
            raise MatrixError(400, "M_BAD_JSON", f"Invalid {kind} event: {exc}") from None
        check_membership_event(event, origin, room_id, event_id, kind)
        outcome = await self._event_handler().on_receive_pdu(origin, event)
        if outcome.error is not None or outcome.soft_failed:
            raise MatrixError(403, "M_FORBIDDEN", outcome.error or f"The {kind} is not allowed")
        stored = await rooms.events.get_event(event.event_id)
        if self.hs.federation_sender is not None and stored is not None:
            await self.hs.federation_sender.send_pdu(stored, exclude={origin})
        if kind == "knock":
            state = await self.hs.federation_invites.invite_room_state(room_id, event.sender)
            return {"knock_room_state": state}
        return {}

    # --- leaving and knocking side -------------------------------------------------------

    async def reject_remote_invite(self, user_id: str, room_id: str) -> StoredEvent | None:
        """Our user leaves a room this server is not in, where it is invited (or
        knocking): through the server that invited it (or any we know of)."""
        membership = await self.hs.rooms.store.get_membership(room_id, user_id)
        if membership is None or membership.membership not in ("invite", "knock"):
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not in room {room_id}")
        own = await self.hs.rooms.events.get_event(membership.event_id)
        room = await self.hs.rooms.require_room(room_id)
        version = get_room_version(room.room_version)
        servers = self._servers_to_ask(own, room_id)
        errors: list[str] = []
        for server in servers:
            try:
                event = await self._dance("leave", server, version, room_id, user_id, {})
            except MatrixError as exc:
                errors.append(f"{server}: {exc.error}")
                continue
            return await store_membership_outlier(self.hs, version, event)
        logger.info("Rejecting %s's invite to %s locally: %s", user_id, room_id, errors)
        return await self._leave_locally(version, own, user_id, room_id)

    async def servers_for_pending_membership(self, user_id: str, room_id: str) -> list[str] | None:
        """For a room this server is not in where ``user_id`` is invited or
        knocking: the servers to join (or leave) through, the inviter's first.
        None when the user has no such membership."""
        membership = await self.hs.rooms.store.get_membership(room_id, user_id)
        if membership is None or membership.membership not in ("invite", "knock"):
            return None
        own = await self.hs.rooms.events.get_event(membership.event_id)
        if own is None or not own.outlier:
            return None
        return self._servers_to_ask(own, room_id)

    def _servers_to_ask(self, own: StoredEvent | None, room_id: str) -> list[str]:
        candidates: list[str | None] = []
        if own is not None:
            candidates.append(server_name_of(own.event.sender))
            unsigned = own.event.pdu.get("unsigned")
            if isinstance(unsigned, dict):
                raw = unsigned.get("invite_room_state", unsigned.get("knock_room_state"))
                candidates.extend(
                    server_name_of(entry["sender"]) for entry in sanitize_stripped_state(raw)
                )
        candidates.append(server_name_of(room_id))
        return [
            server
            for server in dict.fromkeys(candidates)
            if server is not None and server != self.hs.server_name
        ]

    async def _leave_locally(
        self, version: RoomVersion, own: StoredEvent | None, user_id: str, room_id: str
    ) -> StoredEvent | None:
        """An out-of-band leave after our own invite or knock event, signed by
        us and kept only here: the user is rid of an invite nobody can reach."""
        previous = [own.event_id] if own is not None else []
        pdu: dict[str, Any] = {
            "type": MEMBER,
            "room_id": room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": {"membership": "leave"},
            "origin_server_ts": self.hs.clock_ms(),
            "depth": (own.event.depth + 1) if own is not None else 1,
            "prev_events": self._references(version, previous),
            "auth_events": self._references(version, previous),
        }
        if version.event_ids_in_pdu:
            pdu["event_id"] = f"$leave{self.hs.clock_ms()}:{self.hs.server_name}"
        signed = hash_and_sign_event(version, pdu, self.hs.server_name, self.hs.signing_key)
        return await store_membership_outlier(self.hs, version, Event.from_pdu(version, signed))

    @staticmethod
    def _references(version: RoomVersion, event_ids: list[str]) -> list[Any]:
        return [[e, {}] for e in event_ids] if version.event_ids_in_pdu else list(event_ids)

    async def knock_room(
        self, user_id: str, room_id: str, servers: Sequence[str], reason: str | None
    ) -> str:
        """POST /knock: a local event in a room this server is in, else over federation."""
        room = await self.hs.rooms.store.get_room(room_id)
        if room is not None and await self.server_in_room(room_id):
            await self.hs.rooms.update_membership(user_id, room_id, user_id, "knock", reason=reason)
            return room_id
        return await self.knock(user_id, room_id, servers, reason)

    async def knock(
        self,
        user_id: str,
        room_id: str,
        servers: Sequence[str],
        reason: str | None = None,
    ) -> str:
        """POST /knock for a room this server is not in: through the first of
        ``servers`` (then the room ID's server) that lets us. The room ID."""
        candidates = [*servers, server_name_of(room_id)]
        destinations = [
            s for s in dict.fromkeys(candidates) if s is not None and s != self.hs.server_name
        ]
        if not destinations:
            raise MatrixError(404, "M_NOT_FOUND", f"No server to knock on {room_id} through")
        content = {"reason": reason} if reason is not None else {}
        last: MatrixError | None = None
        for server in destinations:
            try:
                event, answer = await self._knock_through(server, user_id, room_id, content)
            except MatrixError as exc:
                if exc.status == 403:
                    raise
                last = exc
                continue
            stripped = sanitize_stripped_state(answer.get("knock_room_state"))
            kept = Event.from_pdu(
                event.room_version,
                {**event.pdu, "unsigned": {"knock_room_state": stripped}},
                event.event_id,
            )
            await store_membership_outlier(self.hs, event.room_version, kept)
            return room_id
        assert last is not None
        raise last

    async def _knock_through(
        self, server: str, user_id: str, room_id: str, content: Mapping[str, Any]
    ) -> tuple[Event, Mapping[str, Any]]:
        try:
            template_answer = await self.remote.make_membership(
                "knock", server, room_id, user_id, list(KNOWN_ROOM_VERSIONS)
            )
        except Exception as exc:
            raise remote_error(server, exc) from None
        event = self._signed_from_template(
            "knock", server, template_answer, room_id, user_id, content
        )
        try:
            answer = await self.remote.send_membership(
                "knock", server, room_id, event.event_id, dict(event.pdu)
            )
        except Exception as exc:
            raise remote_error(server, exc) from None
        return event, answer

    async def _dance(
        self,
        kind: str,
        server: str,
        version: RoomVersion,
        room_id: str,
        user_id: str,
        content: Mapping[str, Any],
    ) -> Event:
        """make_<kind> then send_<kind> through ``server``; the event sent."""
        try:
            answer = await self.remote.make_membership(kind, server, room_id, user_id, None)
            event = self._signed_from_template(kind, server, answer, room_id, user_id, content)
            if event.room_version.identifier != version.identifier:
                raise MatrixError(502, "M_UNKNOWN", f"{server} answered for another room version")
            await self.remote.send_membership(
                kind, server, room_id, event.event_id, dict(event.pdu)
            )
        except MatrixError:
            raise
        except Exception as exc:
            raise remote_error(server, exc) from None
        return event

    def _signed_from_template(
        self,
        kind: str,
        server: str,
        answer: Mapping[str, Any],
        room_id: str,
        user_id: str,
        content: Mapping[str, Any],
    ) -> Event:
        """Our signed event from a resident's template, once it is checked to be
        the membership we asked for."""
        identifier = answer.get("room_version", "1")
        template = answer.get("event")
        if not isinstance(identifier, str) or identifier not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered an unknown room version")
        version = get_room_version(identifier)
        template_content = template.get("content") if isinstance(template, dict) else None
        if (
            not isinstance(template, dict)
            or template.get("type") != MEMBER
            or template.get("room_id") != room_id
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
            or not isinstance(template_content, dict)
            or template_content.get("membership") != kind
        ):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a template for another event")
        pdu = {k: v for k, v in template.items() if k not in ("signatures", "hashes", "unsigned")}
        pdu.update(content={**template_content, **content}, origin_server_ts=self.hs.clock_ms())
        try:
            signed = hash_and_sign_event(version, pdu, self.hs.server_name, self.hs.signing_key)
            return Event.from_pdu(version, signed)
        except ValueError as exc:
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a bad template: {exc}") from None
