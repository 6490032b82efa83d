"""Send-to-device messaging (Client-Server API, "Send-to-Device messaging";
modules/send_to_device.md, OpenAPI to_device.yaml).

Messages wait in each recipient device's inbox at their own position of the
"to_device" stream. /sync delivers them in order and deletes them only when
the device acknowledges them by syncing with a later ``since`` token ("the
server should only delete messages ... once the client has acknowledged"),
so a lost /sync answer loses nothing.

Messages for users of other servers leave as m.direct_to_device EDUs through
the federation sender's durable outbox (ranvier/services/federation/edus.py);
those from other servers arrive through :meth:`ToDeviceService.receive_from_federation`.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.ids import UserID, is_my_user_id, server_name_of
from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.services.requester import Requester
    from ranvier.storage import Transaction

logger = logging.getLogger(__name__)

#: Messages delivered per /sync response (Synapse: 100).
DEFAULT_LIMIT = 100
#: Recipient devices per request; more is 413 M_TOO_LARGE.
MAX_RECIPIENT_DEVICES = 10_000
MAX_TXN_ID_LENGTH = 255


# How many devices' acknowledged positions to remember (see _acknowledged).
MAX_ACKNOWLEDGED = 100_000


class ToDeviceService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = hs.e2e_keys.store  # one store: it holds caches
        # (user, device) -> position up to which this process has already deleted
        # the device's acknowledged messages. New messages always get positions
        # above every token handed out, so once deleted up to P nothing at or
        # below P can reappear: later syncs from the same token skip the write.
        self._acknowledged: dict[tuple[str, str], int] = {}

    def _is_local(self, user_id: str) -> bool:
        return is_my_user_id(user_id, self.hs.server_name)

    async def send(
        self, requester: Requester, event_type: str, txn_id: str, messages: object
    ) -> None:
        """PUT /sendToDevice/{eventType}/{txnId}.

        ``messages``: user ID → device ID (or ``*``, all the user's devices) →
        content. Idempotent per sending device and transaction ID: the ID is
        recorded in the same transaction as the messages.
        """
        if not isinstance(messages, dict):
            raise MatrixError(400, "M_BAD_JSON", "'messages' must be an object.")
        if len(txn_id) > MAX_TXN_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Transaction ID too long.")
        count = 0
        for user_id, devices in messages.items():
            if not UserID.is_valid(user_id):
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {user_id[:300]!r}.")
            if not isinstance(devices, dict) or not all(
                isinstance(content, dict) for content in devices.values()
            ):
                raise MatrixError(
                    400, "M_BAD_JSON", f"'messages.{user_id}' must map device IDs to objects."
                )
            count += len(devices)
        if count > MAX_RECIPIENT_DEVICES:
            raise MatrixError(413, "M_TOO_LARGE", "Too many recipient devices.")

        sender = requester.user_id
        queued: list[tuple[str, str, str]] = []
        recipients: set[str] = set()
        remote: dict[str, dict[str, Any]] = {}
        destinations: set[str] = set()
        async with self.hs.database.transaction() as txn:
            if not await self.store.claim_to_device_txn(
                txn, sender, requester.device_id or "", txn_id, self.hs.clock_ms()
            ):
                return  # a retry of a request already handled
            for user_id, devices in messages.items():
                if not self._is_local(user_id):
                    remote.setdefault(server_name_of(user_id) or "", {})[user_id] = devices
                    continue
                queued += await self._local_messages(txn, sender, event_type, user_id, devices)
            recipients = {user_id for user_id, _, _ in queued}
            await self.store.add_to_device_messages(txn, queued)
            if remote:
                # Server-Server API, "Send-to-device messaging": one m.direct_to_device
                # per server, under a message ID the receiver de-duplicates by (a retry
                # of this request stops at claim_to_device_txn above, so random is
                # fine), queued in this transaction with the client's txn ID.
                message_id = secrets.token_hex(16)
                destinations = await self.hs.federation_edus.queue_to_device(
                    txn, sender, event_type, message_id, remote
                )
        if recipients:
            self.hs.notifier.notify_users(recipients)
        await self.hs.federation_edus.wake_destinations(destinations)

    async def _local_messages(
        self,
        txn: Transaction,
        sender: str,
        event_type: str,
        user_id: str,
        devices: dict[str, Any],
    ) -> list[tuple[str, str, str]]:
        """``(user_id, device_id, message JSON)`` for the user's devices named
        (``*``: all of them; unknown devices are skipped)."""
        if "*" in devices:
            targets = {
                row.device_id: devices["*"]
                for row in await self.hs.accounts.store.get_devices(user_id, txn)
            }
            # A message addressed to a device by name as well wins over "*".
            targets.update({d: c for d, c in devices.items() if d != "*" and d in targets})
        else:
            known = await self.store.existing_device_ids(user_id, list(devices), txn)
            targets = {d: c for d, c in devices.items() if d in known}
        return [
            (
                user_id,
                device_id,
                orjson.dumps({"type": event_type, "sender": sender, "content": content}).decode(),
            )
            for device_id, content in targets.items()
        ]

    async def receive_from_federation(
        self,
        origin: str,
        sender: str,
        event_type: str,
        message_id: str,
        messages: dict[str, Any],
    ) -> None:
        """An m.direct_to_device EDU (already checked: ``sender`` is of ``origin``):
        delivered to our users' devices, once per ``(origin, message_id)``."""
        queued: list[tuple[str, str, str]] = []
        async with self.hs.database.transaction() as txn:
            if not await self.hs.federation_edus.store.claim_inbound_to_device(
                txn, origin, message_id, self.hs.clock_ms()
            ):
                return  # a retried transaction: delivered already
            for user_id, devices in messages.items():
                if not self._is_local(user_id) or not isinstance(devices, dict):
                    continue
                valid = {
                    d: c for d, c in devices.items() if isinstance(d, str) and isinstance(c, dict)
                }
                if valid:
                    queued += await self._local_messages(txn, sender, event_type, user_id, valid)
            await self.store.add_to_device_messages(txn, queued)
        if queued:
            self.hs.notifier.notify_users({user_id for user_id, _, _ in queued})

    async def to_device_for_device(
        self,
        user_id: str,
        device_id: str,
        since_pos: int,
        up_to_pos: int,
        limit: int = DEFAULT_LIMIT,
    ) -> tuple[list[dict[str, Any]], int]:
        """The device's messages with ``since_pos < position <= up_to_pos`` (at most
        ``limit``, oldest first) and the position the next sync token should carry.

        Messages up to ``since_pos`` were delivered by an earlier /sync the client
        has now acknowledged, so they are deleted first. When more than ``limit``
        wait, the returned position is the last one delivered, so the rest come
        with the next sync.
        """
        key = (user_id, device_id)
        if since_pos > self._acknowledged.get(key, 0):
            async with self.hs.database.transaction() as txn:
                await self.store.delete_to_device_messages(txn, user_id, device_id, since_pos)
            if len(self._acknowledged) >= MAX_ACKNOWLEDGED:
                self._acknowledged.clear()  # only an optimisation: forgetting is safe
            self._acknowledged[key] = since_pos
        if since_pos >= up_to_pos:
            return [], up_to_pos  # nothing can be in the empty range
        rows = await self.store.to_device_messages(user_id, device_id, since_pos, up_to_pos, limit)
        events = [orjson.loads(message_json) for _, message_json in rows]
        next_pos = rows[-1][0] if len(rows) >= limit else up_to_pos
        return events, next_pos

    async def current_position(self) -> int:
        from ranvier.storage.engine import current_stream_position

        return await current_stream_position(self.hs.database, "to_device")


def event_type_or_400(event_type: str) -> str:
    if not event_type or len(event_type) > 255:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid event type.")
    return event_type



