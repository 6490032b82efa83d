"""Receiving transactions: PUT /_matrix/federation/v1/send/{txnId}.

Server-Server API, "Transactions" and "PDUs"; the rules follow Synapse
(``federation_server.py``, FEDERATION-MODELS.md §2):

* De-duplication on (origin, txnId): a retry of a transaction still being
  processed waits for the same answer; a retry of a completed one gets the
  answer it had, from a bounded in-memory cache (the last
  ``MAX_REMEMBERED_TRANSACTIONS``). Not stored durably, on purpose: processing
  a transaction again is harmless — a PDU already stored is recognised as a
  duplicate and answered ``{}``, and the EDUs worth protecting (to-device
  messages) carry their own ``message_id`` — so a table written on every
  transaction would buy nothing but write load.
* One transaction per origin at a time: another one from the same origin
  while one is in progress is answered 429 ``M_LIMIT_EXCEEDED`` (Synapse
  answers 429 too); the sender retries it later.
* PDUs: each room's in the order sent, rooms concurrently (at most
  ``ROOM_CONCURRENCY``); EDUs alongside, so to-device messages never wait
  behind a state resolution. Each PDU: its room must be known here; steps
  1-3 with the room's server ACL (``PduChecker.check``), then steps 4-6
  (``FederationEventHandler.on_receive_pdu``). A failure of one PDU or EDU
  goes into the answer (or the log) and never fails the transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ranvier.core.events import compute_event_id
from ranvier.core.federation_checks import PduOutcome
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from ranvier.errors import MatrixError
from ranvier.storage.events import FederatedEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: Spec: "A transaction ... limited to 50 PDUs and 100 EDUs".
MAX_PDUS = 50
MAX_EDUS = 100
#: Rooms whose PDUs are processed at once (Synapse: 10).
ROOM_CONCURRENCY = 10
MAX_REMEMBERED_TRANSACTIONS = 1000
#: The room version an unknown room's PDUs are assumed to be in, to name them.
GUESSED_VERSION = "10"

PduResults = dict[str, dict[str, str]]


class TransactionReceiver:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self._in_flight: dict[str, tuple[str, asyncio.Task[dict[str, Any]]]] = {}
        self._done: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    async def on_transaction(
        self, origin: str, txn_id: str, pdus: Sequence[Any], edus: Sequence[Any]
    ) -> dict[str, Any]:
        """The answer to one transaction: ``{"pdus": {event_id: {} | {"error": ...}}}``."""
        done = self._done.get((origin, txn_id))
        if done is not None:
            return done
        current = self._in_flight.get(origin)
        if current is not None:
            current_txn, task = current
            if current_txn != txn_id:
                raise MatrixError(
                    429, "M_LIMIT_EXCEEDED", "A transaction from this server is in progress"
                )
        else:
            # A task of its own: a sender that hangs up does not cut the work
            # short, and its retry waits for the same answer.
            task = asyncio.create_task(self._run(origin, txn_id, pdus, edus))
            self._in_flight[origin] = (txn_id, task)
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Stop transactions still being processed (the server is stopping;
        their senders retry them)."""
        tasks = [task for _, task in self._in_flight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(
        self, origin: str, txn_id: str, pdus: Sequence[Any], edus: Sequence[Any]
    ) -> dict[str, Any]:
        try:
            answer = await self._process(origin, pdus, edus)
        finally:
            del self._in_flight[origin]
        self._remember(origin, txn_id, answer)
        return answer

    def _remember(self, origin: str, txn_id: str, answer: dict[str, Any]) -> None:
        self._done[(origin, txn_id)] = answer
        while len(self._done) > MAX_REMEMBERED_TRANSACTIONS:
            self._done.popitem(last=False)

    async def _process(
        self, origin: str, pdus: Sequence[Any], edus: Sequence[Any]
    ) -> dict[str, Any]:
        results, _ = await asyncio.gather(self._pdus(origin, pdus), self._edus(origin, edus))
        return {"pdus": results}

    # --- PDUs ------------------------------------------------------------------------------

    async def _pdus(self, origin: str, pdus: Sequence[Any]) -> PduResults:
        by_room: dict[str, list[Mapping[str, Any]]] = {}
        for pdu in pdus:
            room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
            if isinstance(room_id, str):
                by_room.setdefault(room_id, []).append(pdu)
            # Synapse, too, ignores a PDU without a room: it has no ID to answer under.
        results: PduResults = {}
        semaphore = asyncio.Semaphore(ROOM_CONCURRENCY)

        async def one_room(room_id: str, room_pdus: list[Mapping[str, Any]]) -> None:
            async with semaphore:
                for pdu in room_pdus:
                    event_id, error = await self._one_pdu(origin, room_id, pdu)
                    if event_id is not None:
                        results[event_id] = {} if error is None else {"error": error}

        await asyncio.gather(*(one_room(r, p) for r, p in by_room.items()))
        return results

    async def _one_pdu(
        self, origin: str, room_id: str, pdu: Mapping[str, Any]
    ) -> tuple[str | None, str | None]:
        room = await self.hs.rooms.store.get_room(room_id)
        if room is None:
            return _guessed_event_id(pdu), f"this server is not in room {room_id}"
        version = get_room_version(room.room_version)
        try:
            acl = await self.hs.server_acls.for_room(room_id)
            result = await self.hs.pdu_checker.check(version, pdu, origin=origin, acl=acl)
            if result.outcome is PduOutcome.DROPPED or result.event is None:
                return result.event_id, result.reason or "invalid PDU"
            event = result.event
            if result.outcome is PduOutcome.REJECTED:
                await self._store_rejected(room_id, result.event)
                return event.event_id, result.reason or "rejected"
            outcome = await self.hs.federation_events.on_receive_pdu(origin, event)
            return outcome.event_id, outcome.error
        except Exception:  # one PDU's failure never fails the transaction
            logger.exception("Processing a PDU from %s in %s failed", origin, room_id)
            return _guessed_event_id(pdu, version.identifier), "internal error processing PDU"

    async def _store_rejected(self, room_id: str, event: Any) -> None:
        """A PDU kept as rejected (a field over its byte limit in room versions
        whose servers keep such events): stored, never part of the room's state."""
        rooms = self.hs.rooms
        if await rooms.events.get_event(event.event_id) is not None:
            return
        async with rooms.room_lock(room_id):
            await rooms.events.persist_federated_events(
                room_id, [FederatedEvent(event, None, rejected=True)]
            )

    # --- EDUs ------------------------------------------------------------------------------

    async def _edus(self, origin: str, edus: Sequence[Any]) -> None:
        """Each EDU to the EDU service, in order; a bad or failing one is logged."""
        handler = self.hs.federation_edus
        if handler is None:
            return
        for edu in edus:
            if not isinstance(edu, dict):
                continue
            edu_type, content = edu.get("edu_type"), edu.get("content")
            if not isinstance(edu_type, str) or not isinstance(content, dict):
                continue
            try:
                await handler.on_edu(origin, edu_type, content)
            except Exception:
                logger.exception("Processing a %s EDU from %s failed", edu_type, origin)


def _guessed_event_id(pdu: Mapping[str, Any], version_id: str | None = None) -> str | None:
    """The ID to answer a PDU under when it could not be checked: its
    ``event_id`` (room versions 1-2), else its reference hash in the room's
    version. For a room we do not know, the version is a guess: a create
    event names it; for other events every version from 4 on derives the same
    ID unless the PDU carries a top-level key only some versions redact
    (``origin``, ``membership``, ``prev_state``: room version 11)."""
    given = pdu.get("event_id")
    if isinstance(given, str):
        return given
    if version_id is None:
        content = pdu.get("content")
        named = content.get("room_version") if isinstance(content, dict) else None
        is_create = pdu.get("type") == "m.room.create" and isinstance(named, str)
        version_id = named if is_create and named in KNOWN_ROOM_VERSIONS else GUESSED_VERSION
    try:
        return compute_event_id(get_room_version(version_id), pdu)
    except (ValueError, TypeError):  # not canonical JSON, or not an event at all
        return None
