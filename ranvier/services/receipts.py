"""Receipts and read markers (Client-Server API, "Receipts", "Read and unread markers").

``m.read`` and ``m.read.private`` receipts are stored per (room, type, user,
thread) with a position of the ``receipts`` stream; ``m.fully_read`` is the
room account data event the read-markers API manages. For /sync this service
is the ``receipts`` stream provider: :meth:`current_position` and
:meth:`changes_for_user`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.ids import EventID, RoomID
from ranvier.errors import MatrixError
from ranvier.storage.engine import current_stream_position
from ranvier.storage.receipts import STREAM, ReceiptStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE)
MAIN_THREAD = "main"


def check_event_id(event_id: Any, what: str) -> str:
    if not isinstance(event_id, str):
        raise MatrixError(400, "M_BAD_JSON", f"{what} must be an event ID string")
    if not EventID.is_valid(event_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{what}: {event_id!r} is not a valid event ID")
    return event_id


def check_room_id(room_id: str) -> None:
    if not RoomID.is_valid(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id!r} is not a valid room ID")


def check_thread_id(thread_id: Any) -> str | None:
    """receipts.yaml, 400: ``thread_id`` must be a non-empty string, ``main`` or an
    event ID (a thread root)."""
    if thread_id is None:
        return None
    if not isinstance(thread_id, str) or not thread_id:
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id field must be a non-empty string")
    if thread_id != MAIN_THREAD and not EventID.is_valid(thread_id):
        raise MatrixError(
            400, "M_INVALID_PARAM", "thread_id must be 'main' or the event ID of a thread root"
        )
    return thread_id


class ReceiptService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = ReceiptStore(hs.database)

    async def _require_joined(self, room_id: str, user_id: str) -> None:
        if await self.hs.rooms.get_membership(room_id, user_id) != "join":
            raise MatrixError(403, "M_FORBIDDEN", f"User {user_id} not in room {room_id}")

    async def post_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: Any = None,
    ) -> None:
        """POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.

        ``m.fully_read`` is the read-markers API in disguise (receipts.yaml) and
        takes no ``thread_id``.
        """
        check_room_id(room_id)
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ):
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                f"Receipt type must be one of {READ}, {READ_PRIVATE}, {FULLY_READ}",
            )
        check_event_id(event_id, "eventId")
        thread = check_thread_id(thread_id)
        if receipt_type == FULLY_READ and thread is not None:
            raise MatrixError(
                400, "M_INVALID_PARAM", "thread_id is not compatible with m.fully_read"
            )
        await self._require_joined(room_id, user_id)
        if receipt_type == FULLY_READ:
            await self._write(user_id, room_id, fully_read=event_id, receipts=[])
        else:
            await self._write(
                user_id, room_id, fully_read=None, receipts=[(receipt_type, event_id, thread)]
            )

    async def set_read_markers(self, user_id: str, room_id: str, body: dict[str, Any]) -> None:
        """POST /rooms/{roomId}/read_markers: ``m.fully_read`` into room account
        data, ``m.read`` / ``m.read.private`` as unthreaded receipts, all at once."""
        check_room_id(room_id)
        fully_read = body.get(FULLY_READ)
        if fully_read is not None:
            check_event_id(fully_read, FULLY_READ)
        receipts: list[tuple[str, str, str | None]] = []
        for receipt_type in RECEIPT_TYPES:
            value = body.get(receipt_type)
            if value is not None:
                receipts.append((receipt_type, check_event_id(value, receipt_type), None))
        await self._require_joined(room_id, user_id)
        await self._write(user_id, room_id, fully_read=fully_read, receipts=receipts)

    async def _write(
        self,
        user_id: str,
        room_id: str,
        *,
        fully_read: str | None,
        receipts: list[tuple[str, str, str | None]],
    ) -> None:
        """One transaction for the marker and the receipts; then wake who can see them.

        Every event must be in the room (404 ``M_NOT_FOUND`` otherwise; read_markers.yaml:
        "The event MUST belong to the room"). Markers only move forward: a receipt or
        read marker for an event older than the current one is ignored (as Synapse).
        """
        previous: dict[tuple[str, str | None], str] = {}
        for receipt_type, _, thread in receipts:
            current = await self.store.get(room_id, receipt_type, user_id, thread)
            if current is not None:
                previous[(receipt_type, thread)] = current.event_id
        if fully_read is not None:
            marker = await self.hs.account_data.get_account_data(user_id, room_id, FULLY_READ)
            marker_event = None if marker is None else marker.get("event_id")
            if isinstance(marker_event, str):
                previous[(FULLY_READ, None)] = marker_event
        new_ids = [event_id for _, event_id, _ in receipts]
        if fully_read is not None:
            new_ids.append(fully_read)
        found = await self.hs.rooms.events.get_events([*new_ids, *previous.values()])
        for event_id in new_ids:
            stored = found.get(event_id)
            if stored is None or stored.room_id != room_id:
                raise MatrixError(
                    404, "M_NOT_FOUND", f"Could not find event {event_id} in room {room_id}"
                )

        def moves_forward(kind: str, thread: str | None, event_id: str) -> bool:
            old_id = previous.get((kind, thread))
            if old_id is None:
                return True
            if old_id == event_id:
                return False
            old = found.get(old_id)
            return old is None or found[event_id].stream_ordering > old.stream_ordering

        pending = [
            (receipt_type, event_id, thread)
            for receipt_type, event_id, thread in receipts
            if moves_forward(receipt_type, thread, event_id)
        ]
        if fully_read is not None and not moves_forward(FULLY_READ, None, fully_read):
            fully_read = None
        if fully_read is None and not pending:
            return
        now = self.hs.clock_ms()
        async with self.hs.database.transaction() as txn:
            # Stream positions in alphabetical order: account_data, then receipts
            # (see next_stream_positions).
            if fully_read is not None:
                await self.hs.account_data.set_in_transaction(
                    txn, user_id, room_id, FULLY_READ, {"event_id": fully_read}
                )
            for receipt_type, event_id, thread in pending:
                data: dict[str, Any] = {"ts": now}
                if thread is not None:
                    data["thread_id"] = thread
                await self.store.put_in_transaction(
                    txn,
                    room_id,
                    receipt_type,
                    user_id,
                    thread,
                    event_id,
                    orjson.dumps(data).decode(),
                )
        if any(receipt_type == READ for receipt_type, _, _ in pending):
            members = await self.hs.rooms.joined_user_ids(room_id)
            self.hs.notifier.notify_users({*members, user_id})
        else:  # private receipts and the read marker concern only their owner
            self.hs.notifier.notify_users([user_id])
        federation_edus = getattr(self.hs, "federation_edus", None)
        if federation_edus is not None:
            # Public receipts go to the other servers in the room (m.receipt).
            for receipt_type, event_id, thread in pending:
                if receipt_type == READ:
                    receipt_data: dict[str, Any] = {"ts": now}
                    if thread is not None:
                        receipt_data["thread_id"] = thread
                    await federation_edus.on_local_receipt(room_id, user_id, event_id, receipt_data)

    async def receive_remote_receipt(
        self, room_id: str, user_id: str, event_id: str, data: dict[str, Any]
    ) -> None:
        """An ``m.read`` receipt of another server's user (from an m.receipt EDU,
        already checked: the user is of the origin and joined). Kept only for an
        event we have in the room, and only when it moves the receipt forward."""
        thread = data.get("thread_id")
        found = await self.hs.rooms.events.get_event(event_id)
        if found is None or found.room_id != room_id:
            return
        current = await self.store.get(room_id, READ, user_id, thread)
        if current is not None:
            if current.event_id == event_id:
                return
            old = await self.hs.rooms.events.get_event(current.event_id)
            if old is not None and old.stream_ordering >= found.stream_ordering:
                return
        async with self.hs.database.transaction() as txn:
            await self.store.put_in_transaction(
                txn, room_id, READ, user_id, thread, event_id, orjson.dumps(data).decode()
            )
        members = await self.hs.rooms.joined_user_ids(room_id)
        self.hs.notifier.notify_users(members)

    # --- /sync provider ------------------------------------------------------------

    async def current_position(self) -> int:
        """The ``receipts`` stream's current position."""
        return await current_stream_position(self.hs.database, STREAM)

    async def changes_for_user(
        self,
        user_id: str,
        from_pos: int,
        to_pos: int,
        room_ids: Collection[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """``{room_id: {"type": "m.receipt", "content": {event_id: {receipt_type:
        {user_id: {"ts": ..., "thread_id"?: ...}}}}}}``: receipts written in
        (from_pos, to_pos] in ``room_ids`` (default: the user's joined rooms),
        batched into one event per room ("Receipts", Server behaviour);
        ``from_pos`` 0 gives every current receipt. Other users' ``m.read.private``
        receipts are never included ("Private read receipts").
        """
        if from_pos >= to_pos:
            return {}  # no receipt written (most syncs): skip the query over every room
        if room_ids is None:
            room_ids = await self.hs.rooms.joined_room_ids(user_id)
        rows = await self.store.changed_between(list(room_ids), from_pos, to_pos)
        result: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row.receipt_type == READ_PRIVATE and row.user_id != user_id:
                continue
            event = result.setdefault(row.room_id, {"type": "m.receipt", "content": {}})
            by_type = event["content"].setdefault(row.event_id, {})
            by_type.setdefault(row.receipt_type, {})[row.user_id] = orjson.loads(row.data)
        return result
