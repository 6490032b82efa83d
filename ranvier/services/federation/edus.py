"""EDUs over federation, both ways (Server-Server API, "Ephemeral Data Units",
"Typing Notifications", "Receipts", "Presence", "Device Management",
"End-to-End Encryption", "Send-to-device messaging").

Inbound, :meth:`FederationEdus.on_edu` is what PUT /send hands every EDU to.
It never raises for bad input: an EDU that is malformed, about a user of
another server than the origin (conduwuit #406: EDUs not tied to the origin
let anyone type, read or message as anyone), about a room the user is not
in, or from a server the room's ACL denies (MSC4163) is logged and dropped,
so one bad EDU never fails a transaction.

Device lists: we cache the devices of remote users who share a room with a
local user, with the ``stream_id`` of the last update applied. An update
whose ``prev_id`` names exactly that stream_id is applied; any other (an
unknown prev_id, a gap) marks the list stale, durably, and a background task
resyncs it with GET /user/devices, never blocking /send (Synapse #15975),
retrying with backoff while the server is unreachable.

Outbound, the services call the ``on_local_*`` methods after their own
writes; typing, receipts and presence go through the sender's memory queues,
to-device messages and device-list updates through its durable outbox. Our
device-list updates carry real ``stream_id``/``prev_id`` chains (never
Conduit's empty prev_id, which makes every peer resync): what was last
announced of each device is remembered in ``device_list_announced``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.canonical_json import encode_canonical_json
from ranvier.core.ids import EventID, RoomID, UserID, is_my_user_id, server_name_of
from ranvier.core.server_acl import ServerAcl
from ranvier.services.presence import STATES as PRESENCE_STATES
from ranvier.storage.engine import next_stream_positions
from ranvier.storage.federation_edus import (
    CROSS_SIGNING,
    DEVICE,
    OUTBOUND_DEVICE_LIST_STREAM,
    FederationEduStore,
)

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.storage import Transaction

logger = logging.getLogger(__name__)

#: A remote user's typing lasts this long unless renewed (the EDU has no
#: timeout; Synapse's FEDERATION_TIMEOUT is 60 s).
REMOTE_TYPING_TIMEOUT_MS = 60_000
#: Device-list resync retries: first after this, doubling up to the maximum.
RESYNC_RETRY_S = 30.0
MAX_RESYNC_RETRY_S = 3600.0
MAX_ID_LENGTH = 255
#: Cross-signing key types other servers see (user_signing is private).
FEDERATED_CROSS_SIGNING = {"master": "master_key", "self_signing": "self_signing_key"}


class EduRejected(Exception):
    """An inbound EDU (or part of one) that is dropped, with the reason logged."""


def _string(value: object, what: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise EduRejected(f"{what} must be a non-empty string")
    return value


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise EduRejected(f"{what} must be a non-negative integer")
    return value


def content_hash(value: Any) -> str:
    return hashlib.sha256(encode_canonical_json(value, strict=False)).hexdigest()


class FederationEdus:
    def __init__(
        self,
        hs: Homeserver,
        *,
        resync_retry_s: float = RESYNC_RETRY_S,
        max_resync_retry_s: float = MAX_RESYNC_RETRY_S,
    ) -> None:
        self.hs = hs
        self.server_name = hs.server_name
        self.store = FederationEduStore(hs.database)
        self.resync_retry_s = resync_retry_s
        self.max_resync_retry_s = max_resync_retry_s
        self._handlers: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {
            "m.typing": self._on_typing,
            "m.receipt": self._on_receipt,
            "m.presence": self._on_presence,
            "m.device_list_update": self._on_device_list_update,
            "m.signing_key_update": self._on_signing_key_update,
            "m.direct_to_device": self._on_direct_to_device,
        }
        self._resyncs: dict[str, asyncio.Task[None]] = {}
        #: The newest stream_id of updates that arrived while a resync of that
        #: user was under way: the resync answers for them unless it is older.
        self._arrived_during_resync: dict[str, int] = {}
        self._announce_locks: dict[str, asyncio.Lock] = {}
        self._closed = False
        self._resumed = False

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._resyncs.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- inbound ----------------------------------------------------------------------------

    async def resume_resyncs(self) -> None:
        """Resync the lists left stale by an earlier run (the stale mark is durable)."""
        self._resumed = True
        for user_id in await self.store.stale_user_ids():
            self.schedule_resync(user_id)

    async def on_edu(self, origin: str, edu_type: str, content: Any) -> None:
        """One EDU of a transaction from ``origin``; bad ones are logged and dropped."""
        if not self._resumed:
            await self.resume_resyncs()  # the first transaction after a start
        handler = self._handlers.get(edu_type)
        if handler is None:
            logger.debug("Ignoring EDU of unknown type %r from %s", edu_type[:100], origin)
            return
        try:
            if not isinstance(content, dict):
                raise EduRejected("content must be an object")
            await handler(origin, content)
        except asyncio.CancelledError:
            raise
        except EduRejected as exc:
            logger.info("Dropped %s EDU from %s: %s", edu_type, origin, exc)
        except Exception:  # one bad EDU must never fail the transaction (CVE-2025-30355)
            logger.exception("Failed to handle %s EDU from %s", edu_type, origin)

    def _user_of_origin(self, value: object, origin: str, what: str = "user_id") -> str:
        """A valid user ID of ``origin`` ("the user's server must be the origin")."""
        user_id = _string(value, what)
        if not UserID.is_valid(user_id):
            raise EduRejected(f"{what} {user_id!r} is not a user ID")
        if server_name_of(user_id) != origin:
            raise EduRejected(f"{what} {user_id} is not a user of the origin {origin}")
        return user_id

    async def _room_acl(self, room_id: str) -> ServerAcl | None:
        ids = await self.hs.rooms.events.current_state_ids(room_id, [("m.room.server_acl", "")])
        event_id = ids.get(("m.room.server_acl", ""))
        if event_id is None:
            return None
        stored = await self.hs.rooms.events.get_event(event_id)
        return None if stored is None else ServerAcl.from_content(stored.event.content)

    async def _check_room(self, origin: str, room_id: object, user_id: str) -> str:
        """The room, where the ACL lets ``origin`` in (MSC4163) and ``user_id`` is joined."""
        room = _string(room_id, "room_id")
        if not RoomID.is_valid(room):
            raise EduRejected(f"{room!r} is not a room ID")
        acl = await self._room_acl(room)
        if acl is not None and not acl.allows(origin):
            raise EduRejected(f"the server ACL of {room} denies {origin}")
        if await self.hs.rooms.get_membership(room, user_id) != "join":
            raise EduRejected(f"{user_id} is not joined to {room}")
        return room

    async def _shares_room_with_local_user(self, user_id: str) -> bool:
        audience = await self.hs.rooms.users_sharing_rooms_with(user_id)
        return any(is_my_user_id(user, self.server_name) for user in audience)

    async def _on_typing(self, origin: str, content: dict[str, Any]) -> None:
        user_id = self._user_of_origin(content.get("user_id"), origin)
        typing = content.get("typing")
        if not isinstance(typing, bool):
            raise EduRejected("typing must be a boolean")
        room_id = await self._check_room(origin, content.get("room_id"), user_id)
        await self.hs.typing.set_typing(room_id, user_id, typing, REMOTE_TYPING_TIMEOUT_MS)

    async def _on_receipt(self, origin: str, content: dict[str, Any]) -> None:
        # {room_id: {receipt_type: {user_id: {"event_ids": [...], "data": {...}}}}}
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            read = by_type.get("m.read")  # the only receipt type that federates
            if not isinstance(read, dict):
                continue
            for user_value, receipt in read.items():
                try:
                    await self._one_receipt(origin, room_id, user_value, receipt)
                except EduRejected as exc:
                    logger.info("Dropped a receipt from %s: %s", origin, exc)

    async def _one_receipt(self, origin: str, room_id: str, user_value: str, receipt: object) -> None:
        user_id = self._user_of_origin(user_value, origin)
        room_id = await self._check_room(origin, room_id, user_id)
        if not isinstance(receipt, dict):
            raise EduRejected("a receipt must be an object")
        event_ids = receipt.get("event_ids")
        if not isinstance(event_ids, list) or not event_ids:
            raise EduRejected("event_ids must be a non-empty list")
        data = receipt.get("data", {})
        if not isinstance(data, dict):
            raise EduRejected("data must be an object")
        ts = data.get("ts", self.hs.clock_ms())
        thread_id = data.get("thread_id")
        clean: dict[str, Any] = {"ts": _integer(ts, "ts")}
        if thread_id is not None:
            if not isinstance(thread_id, str) or not (
                thread_id == "main" or EventID.is_valid(thread_id)
            ):
                raise EduRejected("thread_id must be 'main' or an event ID")
            clean["thread_id"] = thread_id
        for event_id in event_ids:
            if isinstance(event_id, str) and EventID.is_valid(event_id):
                await self.hs.receipts.receive_remote_receipt(room_id, user_id, event_id, clean)

    async def _on_presence(self, origin: str, content: dict[str, Any]) -> None:
        push = content.get("push")
        if not isinstance(push, list):
            raise EduRejected("push must be a list")
        now = self.hs.clock_ms()
        for update in push:
            try:
                if not isinstance(update, dict):
                    raise EduRejected("a presence update must be an object")
                user_id = self._user_of_origin(update.get("user_id"), origin)
                state = update.get("presence")
                if state not in PRESENCE_STATES:
                    raise EduRejected(f"unknown presence {state!r}")
                ago = _integer(update.get("last_active_ago", 0), "last_active_ago")
                status_msg = update.get("status_msg")
                if status_msg is not None and not isinstance(status_msg, str):
                    raise EduRejected("status_msg must be a string")
                if not await self._shares_room_with_local_user(user_id):
                    raise EduRejected(f"no local user shares a room with {user_id}")
                await self.hs.presence.set_remote_presence(
                    user_id, str(state), status_msg, max(now - ago, 0)
                )
            except EduRejected as exc:
                logger.info("Dropped a presence update from %s: %s", origin, exc)

    async def _on_direct_to_device(self, origin: str, content: dict[str, Any]) -> None:
        sender = self._user_of_origin(content.get("sender"), origin, "sender")
        event_type = _string(content.get("type"), "type")
        message_id = _string(content.get("message_id"), "message_id")
        messages = content.get("messages")
        if not isinstance(messages, dict):
            raise EduRejected("messages must be an object")
        await self.hs.to_device.receive_from_federation(
            origin, sender, event_type, message_id, messages
        )

    # --- inbound device lists ------------------------------------------------------------

    async def _on_device_list_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id = self._user_of_origin(content.get("user_id"), origin)
        device_id = _string(content.get("device_id"), "device_id")
        stream_id = _integer(content.get("stream_id"), "stream_id")
        prev_ids = content.get("prev_id", [])
        if not isinstance(prev_ids, list):
            raise EduRejected("prev_id must be a list")
        prev_ids = [_integer(p, "prev_id") for p in prev_ids]
        deleted = content.get("deleted", False) is True
        display_name = content.get("device_display_name")
        if display_name is not None and not isinstance(display_name, str):
            display_name = None
        keys = content.get("keys")
        if keys is not None and (
            not isinstance(keys, dict)
            or keys.get("user_id") != user_id
            or keys.get("device_id") != device_id
        ):
            raise EduRejected("keys must be the device's own device_keys object")
        if not await self._shares_room_with_local_user(user_id):
            # Nobody here tracks the user: ignore (Server-Server API, "Device
            # Management"); a list we still cache is no longer kept up to date.
            if await self.store.get_device_list(user_id) is not None:
                await self.store.mark_stale(user_id)
            raise EduRejected(f"no local user shares a room with {user_id}")
        if user_id in self._resyncs:
            # A resync is under way; it covers this update unless its answer
            # is older (then it runs again). Resyncing for every update that
            # arrives meanwhile would ask the same list again and again.
            newest = max(self._arrived_during_resync.get(user_id, 0), stream_id)
            self._arrived_during_resync[user_id] = newest
            return
        cached = await self.store.get_device_list(user_id)
        if cached is not None and not cached.stale:
            if stream_id <= cached.stream_id:
                return  # seen already (a retried transaction)
            # It follows exactly what we have: apply it. An empty prev_id follows
            # nothing, so only a list we have never seen an update of (0).
            if all(p == cached.stream_id for p in prev_ids) and (prev_ids or not cached.stream_id):
                async with self.hs.database.transaction() as txn:
                    await self.store.apply_device_update(
                        txn,
                        user_id,
                        stream_id,
                        device_id,
                        deleted=deleted,
                        display_name=display_name,
                        key_json=None if keys is None else orjson.dumps(keys).decode(),
                    )
                    await self.hs.e2e_keys.store.add_device_list_change(txn, user_id)
                await self.hs.e2e_keys.notify_device_change(user_id)
                return
        await self.store.mark_stale(user_id)
        self.schedule_resync(user_id)

    async def _on_signing_key_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id = self._user_of_origin(content.get("user_id"), origin)
        keys = {
            key_type: self._cross_signing_key(content.get(field), key_type, user_id)
            for key_type, field in FEDERATED_CROSS_SIGNING.items()
            if content.get(field) is not None
        }
        if not keys:
            raise EduRejected("no master_key or self_signing_key")
        if not await self._shares_room_with_local_user(user_id):
            raise EduRejected(f"no local user shares a room with {user_id}")
        async with self.hs.database.transaction() as txn:
            for key_type, key in keys.items():
                await self.store.set_cross_signing_key(
                    txn, user_id, key_type, orjson.dumps(key).decode()
                )
            await self.hs.e2e_keys.store.add_device_list_change(txn, user_id)
        await self.hs.e2e_keys.notify_device_change(user_id)

    @staticmethod
    def _cross_signing_key(value: object, key_type: str, user_id: str) -> dict[str, Any]:
        """A CrossSigningKey object of ``user_id`` whose usage includes ``key_type``."""
        if not isinstance(value, dict) or value.get("user_id") != user_id:
            raise EduRejected(f"the {key_type} key must be an object of {user_id}")
        usage, keys = value.get("usage"), value.get("keys")
        if not isinstance(usage, list) or key_type not in usage:
            raise EduRejected(f"the {key_type} key's usage must include {key_type}")
        if not isinstance(keys, dict) or len(keys) != 1:
            raise EduRejected(f"the {key_type} key must hold exactly one key")
        return value

    # --- device-list resync ------------------------------------------------------------

    def schedule_resync(self, user_id: str) -> None:
        """Resync ``user_id``'s device list in the background (one task per user)."""
        if self._closed or user_id in self._resyncs:
            return
        task = asyncio.get_running_loop().create_task(
            self._resync_until_done(user_id), name=f"device-list-resync:{user_id}"
        )
        self._resyncs[user_id] = task
        task.add_done_callback(lambda _: self._resyncs.pop(user_id, None))

    async def resyncs_done(self) -> None:
        """Wait for the resyncs under way (for tests)."""
        while self._resyncs:
            await asyncio.gather(*list(self._resyncs.values()), return_exceptions=True)

    async def _resync_until_done(self, user_id: str) -> None:
        delay = self.resync_retry_s
        while not self._closed:
            stream_id = await self.resync_device_list(user_id)
            if stream_id is not None:
                arrived = self._arrived_during_resync.pop(user_id, 0)
                if arrived <= stream_id:
                    return
                await self.store.mark_stale(user_id)  # an update newer than the answer
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_resync_retry_s)

    async def resync_device_list(self, user_id: str) -> int | None:
        """Replace the cached list with GET /user/devices: the stream_id it
        answered, or None when that failed."""
        server = server_name_of(user_id) or ""
        path = f"/_matrix/federation/v1/user/devices/{urllib.parse.quote(user_id, safe='')}"
        try:
            answer = await self.hs.federation_client.request_json("GET", server, path)
            stream_id, devices, cross_signing = self._parse_user_devices(answer, user_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.info("Device list resync of %s failed: %s", user_id, exc)
            return None
        async with self.hs.database.transaction() as txn:
            await self.store.replace_device_list(txn, user_id, stream_id, devices, cross_signing)
            await self.hs.e2e_keys.store.add_device_list_change(txn, user_id)
        await self.hs.e2e_keys.notify_device_change(user_id)
        return stream_id

    def _parse_user_devices(
        self, answer: Any, user_id: str
    ) -> tuple[int, list[tuple[str, str | None, str | None]], dict[str, str]]:
        if not isinstance(answer, dict) or answer.get("user_id") != user_id:
            raise EduRejected("the answer is not about the user asked for")
        stream_id = _integer(answer.get("stream_id"), "stream_id")
        raw_devices = answer.get("devices")
        if not isinstance(raw_devices, list):
            raise EduRejected("devices must be a list")
        devices: list[tuple[str, str | None, str | None]] = []
        for device in raw_devices:
            if not isinstance(device, dict):
                continue
            device_id = device.get("device_id")
            if not isinstance(device_id, str) or not device_id or len(device_id) > MAX_ID_LENGTH:
                continue
            keys = device.get("keys")
            if not isinstance(keys, dict) or keys.get("user_id") != user_id or (
                keys.get("device_id") != device_id
            ):
                keys = None
            name = device.get("device_display_name")
            devices.append(
                (
                    device_id,
                    name if isinstance(name, str) else None,
                    None if keys is None else orjson.dumps(keys).decode(),
                )
            )
        cross_signing: dict[str, str] = {}
        for key_type, field in FEDERATED_CROSS_SIGNING.items():
            if answer.get(field) is not None:
                key = self._cross_signing_key(answer[field], key_type, user_id)
                cross_signing[key_type] = orjson.dumps(key).decode()
        return stream_id, list({d[0]: d for d in devices}.values()), cross_signing

    async def is_fresh(self, user_id: str) -> bool:
        """Whether the cached list of ``user_id`` can answer /keys/query."""
        cached = await self.store.get_device_list(user_id)
        return cached is not None and not cached.stale

    # --- outbound ------------------------------------------------------------------------

    def _sender(self) -> Any:
        return getattr(self.hs, "federation_sender", None)

    async def _servers_in_room(self, room_id: str) -> set[str]:
        servers = set(await self.hs.rooms.joined_servers(room_id))
        return servers - {self.server_name, ""}

    def _remote_servers(self, users: Iterable[str]) -> set[str]:
        servers = {server_name_of(user) or "" for user in users}
        servers.discard(self.server_name)
        servers.discard("")
        return servers

    async def _servers_sharing_rooms_with(self, user_id: str) -> set[str]:
        return self._remote_servers(await self.hs.rooms.users_sharing_rooms_with(user_id))

    async def on_local_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        sender = self._sender()
        if sender is None:
            return
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        for server in sorted(await self._servers_in_room(room_id)):
            await sender.send_edu(server, "m.typing", content)

    async def on_local_receipt(
        self, room_id: str, user_id: str, event_id: str, data: Mapping[str, Any]
    ) -> None:
        """A public (``m.read``) receipt of a local user."""
        sender = self._sender()
        if sender is None:
            return
        content = {
            room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": dict(data)}}}
        }
        for server in sorted(await self._servers_in_room(room_id)):
            await sender.send_edu(server, "m.receipt", content)

    async def on_local_presence(self, user_id: str, presence: Mapping[str, Any]) -> None:
        sender = self._sender()
        if sender is None:
            return
        content = {"push": [{**presence, "user_id": user_id}]}
        for server in sorted(await self._servers_sharing_rooms_with(user_id)):
            await sender.send_edu(server, "m.presence", content)

    async def queue_to_device(
        self,
        txn: Transaction,
        sender_id: str,
        event_type: str,
        message_id: str,
        messages_by_server: Mapping[str, Mapping[str, Any]],
    ) -> set[str]:
        """One m.direct_to_device per server, written to the durable outbox in
        ``txn``: the caller's transaction that also records the client's
        transaction ID, so a failure or crash between the two can neither lose
        the messages nor send them twice. The destinations to wake (with
        :meth:`wake_destinations`) after ``txn`` commits; none without a sender."""
        sender = self._sender()
        if sender is None:
            for server in messages_by_server:
                logger.info("Dropping to-device messages for %s: federation is off", server)
            return set()
        destinations: set[str] = await sender.add_durable_edus(
            txn,
            (
                (
                    server,
                    "m.direct_to_device",
                    {
                        "sender": sender_id,
                        "type": event_type,
                        "message_id": message_id,
                        "messages": dict(messages),
                    },
                )
                for server, messages in sorted(messages_by_server.items())
            ),
        )
        return destinations

    async def wake_destinations(self, destinations: set[str]) -> None:
        """Send what :meth:`queue_to_device` queued, once its transaction committed."""
        sender = self._sender()
        if sender is not None and destinations:
            await sender.wake_destinations(destinations)

    async def on_local_device_change(self, user_id: str) -> None:
        """Announce what changed of a local user's devices and cross-signing keys
        since the last announcement: one m.device_list_update per device (a new
        stream_id each, prev_id the one before), m.signing_key_update when the
        master or self-signing key changed; to every server sharing a room."""
        if len(self._announce_locks) > 10_000:  # bounded: keep only the ones in use
            self._announce_locks = {u: lk for u, lk in self._announce_locks.items() if lk.locked()}
        lock = self._announce_locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            edus = await self._record_device_changes(user_id)
        if not edus:
            return
        sender = self._sender()
        if sender is None:
            return
        servers = await self._servers_sharing_rooms_with(user_id)
        await sender.send_durable_edus(
            (server, edu_type, content) for server in sorted(servers) for edu_type, content in edus
        )

    async def current_devices(
        self, user_id: str
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """A local user's devices as federation sees them (device ID → ``{device_id,
        keys?}``) and the master / self-signing keys (key type → key)."""
        e2e = self.hs.e2e_keys
        answer = await e2e.local_key_answers(None, {user_id: []}, display_names=False)
        keys = answer["device_keys"].get(user_id, {})
        devices: dict[str, dict[str, Any]] = {
            row.device_id: {"device_id": row.device_id}
            for row in await self.hs.accounts.get_devices(user_id)
        }
        for device_id, obj in keys.items():
            devices.setdefault(device_id, {"device_id": device_id})["keys"] = obj
        cross_signing = {
            key_type: answer[f"{key_type}_keys"][user_id]
            for key_type in FEDERATED_CROSS_SIGNING
            if user_id in answer[f"{key_type}_keys"]
        }
        return devices, cross_signing

    async def _record_device_changes(self, user_id: str) -> list[tuple[str, dict[str, Any]]]:
        announced = await self.store.announced(user_id)
        devices, cross_signing = await self.current_devices(user_id)
        # (device ID, device as announced, None when deleted)
        changes: list[tuple[str, dict[str, Any] | None]] = []
        for device_id, device in sorted(devices.items()):
            before = announced.get((DEVICE, device_id))
            if before is None or before.content_hash != content_hash(device):
                changes.append((device_id, device))
        for (kind, item), before in sorted(announced.items()):
            if kind == DEVICE and item not in devices and before.content_hash:
                changes.append((item, None))
        cross_hash = content_hash(cross_signing) if cross_signing else ""
        before_cross = announced.get((CROSS_SIGNING, ""))
        cross_changed = cross_hash != (before_cross.content_hash if before_cross else "")
        if not changes and not cross_changed:
            return []
        latest = max(
            (a.stream_id for (kind, _), a in announced.items() if kind == DEVICE), default=0
        )
        edus: list[tuple[str, dict[str, Any]]] = []
        async with self.hs.database.transaction() as txn:
            stream_ids = iter(
                await next_stream_positions(txn, OUTBOUND_DEVICE_LIST_STREAM, len(changes))
                if changes
                else ()
            )
            for device_id, changed in changes:
                stream_id = next(stream_ids)
                content = {
                    "user_id": user_id,
                    "device_id": device_id,
                    "stream_id": stream_id,
                    "prev_id": [latest] if latest else [],
                }
                if changed is None:
                    content["deleted"] = True
                elif "keys" in changed:
                    content["keys"] = changed["keys"]
                edus.append(("m.device_list_update", content))
                await self.store.set_announced(
                    txn, user_id, DEVICE, device_id, stream_id,
                    None if changed is None else content_hash(changed),
                )
                latest = stream_id
            if cross_changed:
                # Not a device-list update: it takes no stream_id (a prev_id
                # naming it would send peers into a needless resync).
                await self.store.set_announced(
                    txn, user_id, CROSS_SIGNING, "", 0, cross_hash or None
                )
                if cross_signing:
                    edus.append(
                        (
                            "m.signing_key_update",
                            {
                                "user_id": user_id,
                                **{
                                    FEDERATED_CROSS_SIGNING[t]: key
                                    for t, key in cross_signing.items()
                                },
                            },
                        )
                    )
        return edus
