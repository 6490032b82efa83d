"""Joining rooms over federation, on both sides.

Server-Server API, "Joining Rooms":

* As the **resident** server (the room lives here, a user of another server
  joins): ``make_join`` answers a template member event built on our room's
  current head; ``send_join`` takes the event the joining server signed,
  checks that it is the join it claims to be (the room in the path is the
  event's room: CVE-2020-26257; sender's server is the origin; state_key is
  the sender; membership is ``join``), counter-signs a restricted join it
  authorised, receives it like any PDU, sends it on to the room's other
  servers, and answers the state before it and its auth chain.
* As the **joining** server: ask a resident server for a template, check
  that it is the template we asked for, sign it, send it, then check every
  event of the answer (signatures and hashes through ``verify``, the auth
  rules of each state and auth-chain event against its own auth events, and
  the join against the state) before storing the state and the auth chain as
  outliers and the join with its state.

Full joins only: partial-state ("faster") joins (MSC3706) are not
implemented, so ``omit_members`` is never asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ranvier.core.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
)
from ranvier.core.events import Event, StateKey, hash_and_sign_event
from ranvier.core.ids import server_name_of
from ranvier.core.redaction import redact
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from ranvier.core.signing import sign_json
from ranvier.errors import MatrixError
from ranvier.services.federation.events import (
    FederationEventHandler,
    PduCheckFailed,
    PduVerifier,
    auth_ordered,
)
from ranvier.services.restricted_joins import restricted_join_authoriser
from ranvier.services.rooms import MEMBER, EventSpec, new_event_id
from ranvier.storage.events import FederatedEvent, NewRoom
from ranvier.storage.state import StateMap

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)


class RemoteJoins(Protocol):
    """The resident server's side, reached over federation."""

    async def make_join(
        self, destination: str, room_id: str, user_id: str, versions: Sequence[str]
    ) -> Mapping[str, Any]: ...

    async def send_join(
        self, destination: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]: ...


class JoinService:
    def __init__(
        self,
        hs: Homeserver,
        remote: RemoteJoins,
        verify: PduVerifier,
        handler: FederationEventHandler,
    ) -> None:
        self.hs = hs
        self.remote = remote
        self.verify = verify
        self.handler = handler

    # --- resident side -----------------------------------------------------------------

    async def make_join(
        self, origin: str, room_id: str, user_id: str, versions: Iterable[str]
    ) -> dict[str, Any]:
        """GET /make_join: ``{"room_version", "event"}`` (a template, unsigned)."""
        if server_name_of(user_id) != origin:
            raise MatrixError(403, "M_FORBIDDEN", "The user is not of the requesting server")
        rooms = self.hs.rooms
        room = await rooms.store.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        if room.room_version not in set(versions):
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"The room's version {room.room_version} is not supported by {origin}",
                room_version=room.room_version,
            )
        content: dict[str, Any] = {"membership": "join"}
        async with rooms.room_lock(room_id):
            head = await rooms.load_head(room)
            authoriser = await restricted_join_authoriser(self.hs, room_id, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
            template = await rooms.draft_event(head, user_id, EventSpec(MEMBER, content, user_id))
            # Would the join be allowed now? (Synapse checks too, so that the
            # joining server learns of a refusal before signing anything.)
            await rooms.check_draft(head, Event.from_pdu(head.version, template))
        return {"room_version": room.room_version, "event": template}

    async def send_join(
        self, origin: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PUT /send_join (v2): the state before the join and its auth chain."""
        room = await self.hs.rooms.store.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        version = get_room_version(room.room_version)
        try:
            event = await self.verify(version, self._countersigned_if_ours(version, pdu))
        except PduCheckFailed as exc:
            raise MatrixError(400, "M_BAD_JSON", f"Invalid join event: {exc}") from None
        self._check_membership_event(event, origin, room_id, event_id, "join")
        outcome = await self.handler.on_receive_pdu(origin, event)
        if outcome.error is not None or outcome.soft_failed:
            raise MatrixError(403, "M_FORBIDDEN", outcome.error or "The join is not allowed")
        stored = await self.hs.rooms.events.get_event(event.event_id)
        if self.hs.federation_sender is not None and stored is not None:
            await self.hs.federation_sender.send_pdu(stored, exclude={origin})
        state = await self.hs.rooms.events.state_at_event(event.event_id) or {}
        state_events = await self.hs.rooms.events.get_events(state.values())
        chain = await self.handler.auth_closure(
            auth_id for stored in state_events.values() for auth_id in stored.event.auth_event_ids
        )
        return {
            "origin": self.hs.server_name,
            "state": [dict(s.event.pdu) for s in state_events.values()],
            "auth_chain": [dict(e.pdu) for e in chain.values()],
            "event": dict(event.pdu),
            "members_omitted": False,
        }

    def _check_membership_event(
        self, event: Event, origin: str, room_id: str, event_id: str, membership: str
    ) -> None:
        check_membership_event(event, origin, room_id, event_id, membership)

    def _countersigned_if_ours(
        self, version: RoomVersion, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """A restricted join that one of our users authorises, with our signature.

        Signed before the checks, which require the authorising server's
        signature (Server-Server API, "Validating hashes and signatures on
        received events"): the joining server cannot have it yet, and Synapse
        sends such a join signed by itself only, leaving the resident server to
        sign it at send_join. The signature leaves this server only if every
        check that follows passes; a join that fails them is dropped.
        """
        content = pdu.get("content")
        authoriser = (
            content.get("join_authorised_via_users_server") if isinstance(content, dict) else None
        )
        if not (
            version.restricted_join_rule
            and isinstance(authoriser, str)
            and self.hs.rooms.is_local_user(authoriser)
        ):
            return pdu
        try:
            event = Event.from_pdu(version, pdu)
        except ValueError:
            return pdu  # malformed: the checks say why
        return self._countersign(version, event).pdu

    def _countersign(self, version: RoomVersion, event: Event) -> Event:
        """Add our signature to a restricted join we authorised (room versions 8+)."""
        to_sign = {
            k: v for k, v in redact(version, dict(event.pdu)).items() if k not in ("unsigned",)
        }
        if not version.event_ids_in_pdu:
            to_sign.pop("event_id", None)
        ours = sign_json(to_sign, self.hs.server_name, self.hs.signing_key)["signatures"]
        signatures = {**event.pdu.get("signatures", {}), **ours}
        return Event.from_pdu(version, {**event.pdu, "signatures": signatures}, event.event_id)

    # --- joining side ------------------------------------------------------------------

    async def join_remote_room(self, user_id: str, room_id: str, servers: Sequence[str]) -> str:
        """Join ``room_id`` through the first of ``servers`` that lets us; the room ID."""
        errors: list[str] = []
        for server in servers:
            if server == self.hs.server_name:
                continue
            try:
                await self._join_through(server, user_id, room_id)
                return room_id
            except MatrixError as exc:
                if exc.status == 403:
                    raise
                errors.append(f"{server}: {exc.error}")
            except Exception as exc:  # unreachable or broken server: try the next one
                logger.info("Joining %s through %s failed: %r", room_id, server, exc)
                errors.append(f"{server}: {exc}")
        raise MatrixError(
            404, "M_NOT_FOUND", f"No server could be reached to join {room_id}: {errors}"
        )

    async def _join_through(self, server: str, user_id: str, room_id: str) -> None:
        answer = await self.remote.make_join(server, room_id, user_id, list(KNOWN_ROOM_VERSIONS))
        version = get_room_version(str(answer.get("room_version", "1")))
        template = answer.get("event")
        if not isinstance(template, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent no join template")
        content = template.get("content")
        if (
            template.get("type") != MEMBER
            or template.get("room_id") != room_id
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
            or not isinstance(content, dict)
            or content.get("membership") != "join"
        ):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a template for another event")
        profile = await self.hs.profiles.get_profile_or_empty(user_id)
        content = {
            **content,
            **{
                k: v
                for k, v in profile.items()
                if k in ("displayname", "avatar_url") and isinstance(v, str)
            },
        }
        pdu = {
            key: value
            for key, value in template.items()
            if key not in ("signatures", "hashes", "unsigned")
        }
        pdu.update(content=content, origin_server_ts=self.hs.clock_ms())
        if version.event_ids_in_pdu:
            # v1/v2: the event ID names the server that made the event, whose
            # signature the checks require ("Validating hashes and signatures on
            # received events"): ours, not the resident server's that made the
            # template (Synapse refuses the join otherwise, and replaces the ID too
            # when it joins).
            pdu["event_id"] = new_event_id(self.hs.server_name)
        signed = hash_and_sign_event(version, pdu, self.hs.server_name, self.hs.signing_key)
        join = Event.from_pdu(version, signed)
        answer = await self.remote.send_join(server, room_id, join.event_id, signed)
        returned = answer.get("event")
        if isinstance(returned, dict) and returned.get("signatures"):
            countersigned = await self.verify(version, returned)
            if countersigned.event_id == join.event_id:
                join = countersigned
        await self._store_joined_room(server, version, join, answer)

    async def _store_joined_room(
        self, server: str, version: RoomVersion, join: Event, answer: Mapping[str, Any]
    ) -> None:
        by_id: dict[str, Event] = {}
        for key in ("auth_chain", "state"):
            for pdu in answer.get(key) or []:
                if not isinstance(pdu, dict):
                    continue
                try:
                    event = await self.verify(version, pdu)
                except PduCheckFailed as exc:
                    logger.info("Dropped an event of %s's send_join answer: %s", server, exc)
                    continue
                if event.room_id == join.room_id:
                    by_id[event.event_id] = event
        state_ids = {
            event_id
            for pdu in answer.get("state") or []
            if isinstance(pdu, dict)
            for event_id in [_event_id_of(version, pdu)]
            if event_id in by_id
        }
        rejected = _check_auth_chain(by_id)
        state: StateMap = {}
        for event_id in sorted(state_ids, key=lambda e: (by_id[e].depth, e)):
            event = by_id[event_id]
            if event_id not in rejected and event.is_state():
                state[event.state_tuple] = event_id
        create_id = state.get(("m.room.create", ""))
        if create_id is None:
            raise MatrixError(502, "M_UNKNOWN", f"{server}'s answer has no create event")
        create = by_id[create_id]
        if str(create.content.get("room_version", "1")) != version.identifier:
            raise MatrixError(502, "M_UNKNOWN", f"{server}'s answer is of another room version")
        try:
            auth_events = [by_id[state[key]] for key in _join_auth_keys(join) if key in state]
            check_auth_rules(join, auth_events)
        except AuthError as exc:
            raise MatrixError(403, "M_FORBIDDEN", f"The join is not allowed: {exc}") from None
        rooms = self.hs.rooms
        events = rooms.events
        new_room = None
        if await rooms.store.get_room(join.room_id) is None:
            new_room = NewRoom(
                join.room_id, version.identifier, create.sender, False, self.hs.clock_ms()
            )
        ordered = auth_ordered(by_id)
        async with rooms.room_lock(join.room_id):
            await events.persist_federated_events(
                join.room_id,
                [FederatedEvent(e, None, rejected=e.event_id in rejected) for e in ordered],
                new_room=new_room,
            )
            await events.persist_federated_events(
                join.room_id,
                [FederatedEvent(join, state)],
                current_state={**state, join.state_tuple: join.event_id},
            )
        await rooms.notify_event(join)


def check_membership_event(
    event: Event, origin: str, room_id: str, event_id: str, membership: str
) -> None:
    """What every send_join/leave/knock checks (Server-Server API; CVE-2020-26257)."""
    problems = [
        (event.room_id != room_id, "the event is not of the room in the path"),
        (event.event_id != event_id, "the event ID does not match the path"),
        (event.type != MEMBER, "not a membership event"),
        (event.state_key != event.sender, "state_key is not the sender"),
        (server_name_of(event.sender) != origin, "the sender is not of the requesting server"),
        (event.membership != membership, f"membership is not {membership}"),
    ]
    for failed, message in problems:
        if failed:
            raise MatrixError(400, "M_BAD_JSON", f"Invalid {membership} event: {message}")


def _event_id_of(version: RoomVersion, pdu: Mapping[str, Any]) -> str | None:
    try:
        return Event.from_pdu(version, pdu).event_id
    except ValueError:
        return None


def _join_auth_keys(join: Event) -> list[StateKey]:
    return sorted(auth_types_for_event(join) | {("m.room.create", "")})


def _check_auth_chain(events: Mapping[str, Event]) -> set[str]:
    """IDs of the events that fail the auth rules against their own auth events
    (or cite an auth event we lack or rejected)."""
    rejected: set[str] = set()
    for event in auth_ordered(events):
        auth_ids = list(event.auth_event_ids)
        if event.room_version.room_id_from_create_event and event.type != "m.room.create":
            auth_ids.append("$" + event.room_id[1:])
        if any(a not in events or a in rejected for a in auth_ids):
            rejected.add(event.event_id)
            continue
        try:
            check_auth_rules(event, [events[a] for a in auth_ids])
        except AuthError:
            rejected.add(event.event_id)
    return rejected
