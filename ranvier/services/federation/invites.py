"""Inviting users of other servers, and being invited by them.

Server-Server API, "Inviting to a room" (PUT /_matrix/federation/v2/invite):

* **Outbound** (our user invites a remote user): the invite is built and
  signed as any local event, then sent to the invitee's server with the room
  version and a stripped summary of the room; the answer must be that very
  event with the invitee's server's signature added. Only then is it persisted
  (and so sent to the room's other servers). Nothing is persisted when the
  invitee's server refuses or cannot be reached.
* **Inbound** (a remote user invites ours): the event is checked (steps 1–3 of
  "Checks performed on receipt of a PDU"), must be an invite of one of our
  users, in the room of the path (CVE-2020-26257), sent by a user of the
  requesting server; we add our signature and answer it. For a room we are not
  in, the invite is kept as an outlier with the stripped state the inviter sent
  (checked and bounded: CVE-2024-52815), in the event's ``unsigned``
  ``invite_room_state`` as Synapse keeps it, and the invitee's membership
  becomes ``invite`` so that /sync shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ranvier.core.events import Event, add_event_signature, verify_event_signature
from ranvier.core.federation_checks import PduOutcome as CheckOutcome
from ranvier.core.federation_checks import minimum_valid_until_ts
from ranvier.core.ids import server_name_of
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from ranvier.core.signing import SignatureError
from ranvier.core.stripped_state import (
    MEMBER,
    STRIPPED_STATE_TYPES,
    sanitize_stripped_state,
    strip_event,
)
from ranvier.errors import MatrixError
from ranvier.services.federation.client import (
    FederationClient,
    FederationResponseError,
    FederationUnreachable,
)
from ranvier.services.federation.verify import PduChecker
from ranvier.storage.events import FederatedEvent, NewRoom, StoredEvent
from ranvier.storage.state import StateKey

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

FEDERATION_V1 = "/_matrix/federation/v1"
FEDERATION_V2 = "/_matrix/federation/v2"


def _segment(value: str) -> str:
    return quote(value, safe="")


class RemoteMemberships(Protocol):
    """Another server's invite, leave and knock endpoints."""

    async def send_invite(
        self, destination: str, room_id: str, event_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]: ...

    async def make_membership(
        self,
        kind: str,
        destination: str,
        room_id: str,
        user_id: str,
        versions: list[str] | None,
    ) -> Mapping[str, Any]: ...

    async def send_membership(
        self, kind: str, destination: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]: ...


class HttpRemoteMemberships:
    """:class:`RemoteMemberships` over the federation client (X-Matrix signed)."""

    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def send_invite(
        self, destination: str, room_id: str, event_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        path = f"{FEDERATION_V2}/invite/{_segment(room_id)}/{_segment(event_id)}"
        answer = await self.client.request_json("PUT", destination, path, content=dict(body))
        return answer if isinstance(answer, dict) else {}

    async def make_membership(
        self,
        kind: str,
        destination: str,
        room_id: str,
        user_id: str,
        versions: list[str] | None,
    ) -> Mapping[str, Any]:
        path = f"{FEDERATION_V1}/make_{kind}/{_segment(room_id)}/{_segment(user_id)}"
        query = None if versions is None else {"ver": versions}
        answer = await self.client.request_json("GET", destination, path, query=query)
        return answer if isinstance(answer, dict) else {}

    async def send_membership(
        self, kind: str, destination: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        # send_leave has a v2 (a plain object answer); send_knock exists in v1 only.
        version = FEDERATION_V2 if kind == "leave" else FEDERATION_V1
        path = f"{version}/send_{kind}/{_segment(room_id)}/{_segment(event_id)}"
        answer = await self.client.request_json("PUT", destination, path, content=dict(pdu))
        return answer if isinstance(answer, dict) else {}


def remote_error(destination: str, exc: Exception) -> MatrixError:
    """What our client is told when another server refused or did not answer:
    its 4xx error passed on (as Synapse does), else 502 ``M_UNKNOWN``."""
    if isinstance(exc, FederationResponseError) and 400 <= exc.status < 500:
        return MatrixError(exc.status, exc.errcode or "M_UNKNOWN", exc.error or str(exc))
    if isinstance(exc, FederationUnreachable):
        return MatrixError(502, "M_UNKNOWN", f"{destination} could not be reached")
    return MatrixError(502, "M_UNKNOWN", f"{destination} failed: {exc}")


class FederationInvites:
    def __init__(
        self, hs: Homeserver, remote: RemoteMemberships, checker: PduChecker | None = None
    ) -> None:
        self.hs = hs
        self.remote = remote
        self.checker = checker if checker is not None else PduChecker(hs.keyring)

    # --- outbound ----------------------------------------------------------------------

    async def send_invite(self, event: Event) -> Event:
        """Have the invitee's server counter-sign ``event`` (our invite of one of
        its users); the counter-signed event, or a :class:`MatrixError`. Called
        under the room's lock, before the event is persisted."""
        invitee = event.state_key or ""
        destination = server_name_of(invitee)
        if destination is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a user ID: {invitee!r}")
        version = event.room_version
        body = {
            "room_version": version.identifier,
            "event": dict(event.pdu),
            "invite_room_state": await self.invite_room_state(event.room_id, event.sender),
        }
        try:
            answer = await self.remote.send_invite(destination, event.room_id, event.event_id, body)
        except Exception as exc:  # refused, unreachable or broken: nothing is persisted
            logger.info("Inviting %s to %s failed: %r", invitee, event.room_id, exc)
            raise remote_error(destination, exc) from None
        return await self._countersigned(destination, event, answer.get("event"))

    async def _countersigned(self, destination: str, event: Event, returned: object) -> Event:
        """The invitee's server's answer, if it is our event with its valid signature."""
        bad = MatrixError(502, "M_UNKNOWN", f"{destination} answered the invite with another event")
        if not isinstance(returned, dict):
            raise bad
        version = event.room_version
        try:
            answered = Event.from_pdu(version, returned)
        except ValueError:
            raise bad from None
        # The same event: same ID (v3+ a hash of it) and the same signed form.
        ours = {k: v for k, v in event.pdu.items() if k not in ("signatures", "unsigned")}
        theirs = {k: v for k, v in answered.pdu.items() if k not in ("signatures", "unsigned")}
        if answered.event_id != event.event_id or ours != theirs:
            raise bad
        if not await self._signed_by(version, answered, destination):
            raise MatrixError(
                502, "M_UNKNOWN", f"{destination} did not sign the invite with a valid key"
            )
        signatures = {
            **event.pdu["signatures"],
            destination: answered.pdu["signatures"][destination],
        }
        return Event.from_pdu(version, {**event.pdu, "signatures": signatures}, event.event_id)

    async def _signed_by(self, version: RoomVersion, event: Event, server: str) -> bool:
        by_key = event.pdu.get("signatures", {}).get(server)
        if not isinstance(by_key, dict):
            return False
        key_ids = [key_id for key_id in by_key if key_id.startswith("ed25519:")]
        keys = await self.hs.keyring.get_verify_keys(server, key_ids, minimum_valid_until_ts(event))
        for key_id, key in keys.items():
            try:
                verify_event_signature(version, event.pdu, server, key_id, key.key)
            except SignatureError:
                return False
            return True
        return False

    async def invite_room_state(self, room_id: str, sender: str) -> list[dict[str, Any]]:
        """The stripped state sent with an invite (Client-Server API, "Stripped
        state"): the listed types and the inviter's member event, nothing else
        (CVE-2023-32323: never more of the room than these)."""
        events = self.hs.rooms.events
        keys: list[StateKey] = [(t, "") for t in STRIPPED_STATE_TYPES] + [(MEMBER, sender)]
        state = await events.current_state_ids(room_id, keys)
        loaded = await events.get_events_ordered([state[key] for key in keys if key in state])
        return [
            strip_event(
                e.event.type,
                e.event.state_key or "",
                e.event.sender,
                e.event.content if e.redacted_by is None else {},
            )
            for e in loaded
        ]

    # --- inbound -----------------------------------------------------------------------

    async def on_invite(
        self, origin: str, room_id: str, event_id: str, body: object
    ) -> dict[str, Any]:
        """PUT /v2/invite: ``{"event": <the invite with our signature>}``."""
        if not isinstance(body, dict):
            raise MatrixError(400, "M_BAD_JSON", "The body must be an object")
        identifier = body.get("room_version")
        if not isinstance(identifier, str) or identifier not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Room version {identifier!r} is not supported by this server",
                **({"room_version": identifier} if isinstance(identifier, str) else {}),
            )
        version = get_room_version(identifier)
        event = await self._checked_invite(origin, version, room_id, event_id, body.get("event"))
        signed = Event.from_pdu(
            version,
            add_event_signature(version, event.pdu, self.hs.server_name, self.hs.signing_key),
            event.event_id,
        )
        stripped = sanitize_stripped_state(body.get("invite_room_state"))
        await self._store_invite(version, signed, stripped)
        answer = {k: v for k, v in signed.pdu.items() if k != "unsigned"}
        return {"event": answer}

    async def _checked_invite(
        self, origin: str, version: RoomVersion, room_id: str, event_id: str, pdu: object
    ) -> Event:
        if not isinstance(pdu, dict):
            raise MatrixError(400, "M_BAD_JSON", "event must be an object")
        result = await self.checker.check(version, pdu, origin=origin)
        if result.outcome is not CheckOutcome.ACCEPTED or result.event is None:
            raise MatrixError(403, "M_FORBIDDEN", f"Invalid invite event: {result.reason}")
        event = result.event
        invitee = event.state_key
        problems = [
            (
                event.room_id != room_id,
                400,
                "M_BAD_JSON",
                "the event is not of the room in the path",
            ),
            (event.event_id != event_id, 400, "M_BAD_JSON", "the event ID does not match the path"),
            (event.type != MEMBER, 400, "M_BAD_JSON", "not a membership event"),
            (event.membership != "invite", 400, "M_BAD_JSON", "membership is not invite"),
            (
                server_name_of(event.sender) != origin,
                403,
                "M_FORBIDDEN",
                "the sender is not of the requesting server",
            ),
            (
                invitee is None or not self.hs.rooms.is_local_user(invitee),
                403,
                "M_FORBIDDEN",
                "the invitee is not a user of this server",
            ),
        ]
        for failed, status, errcode, message in problems:
            if failed:
                raise MatrixError(status, errcode, f"Invalid invite: {message}")
        assert invitee is not None
        if not await self.hs.accounts.user_exists(invitee):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown user {invitee}")
        return event

    async def _store_invite(
        self, version: RoomVersion, event: Event, stripped: list[dict[str, Any]]
    ) -> None:
        room = await self.hs.rooms.store.get_room(event.room_id)
        if room is not None and await self._server_in_room(event.room_id):
            # The inviting server sends the invite to every server in the room,
            # ours included: it arrives through /send with its state.
            return
        if room is not None and room.room_version != version.identifier:
            raise MatrixError(400, "M_BAD_JSON", "The room version does not match the room's")
        unsigned = {"invite_room_state": stripped}
        kept = Event.from_pdu(version, {**event.pdu, "unsigned": unsigned}, event.event_id)
        await store_membership_outlier(self.hs, version, kept)

    async def _server_in_room(self, room_id: str) -> bool:
        return any(
            self.hs.rooms.is_local_user(user_id)
            for user_id in await self.hs.rooms.joined_user_ids(room_id)
        )


async def store_membership_outlier(
    hs: Homeserver, version: RoomVersion, event: Event
) -> StoredEvent | None:
    """Keep a member event of one of our users in a room this server is not in
    (an invite, the leave rejecting one, a knock) as an outlier, and make it
    that user's membership, so /sync shows it. The room row is created if new."""
    rooms = hs.rooms
    async with rooms.room_lock(event.room_id):
        new_room = None
        if await rooms.store.get_room(event.room_id) is None:
            new_room = NewRoom(
                event.room_id, version.identifier, event.sender, False, hs.clock_ms()
            )
        current = await rooms.events.current_state_ids(event.room_id)
        stored = await rooms.events.persist_federated_events(
            event.room_id,
            [FederatedEvent(event, None)],
            current_state={**current, event.state_tuple: event.event_id},
            new_room=new_room,
        )
    await rooms.notify_event(event)
    return stored[0] if stored else None
