"""Two homeservers federating in one process, without HTTP (both engines).

``Network`` stands for the wire: each server's federation services call the
other's directly, every PDU and answer goes through a JSON round trip, and
every PDU a server receives passes ``verify`` (signatures of the sender's
server with the keys the network knows, and the content hash), as the real
receiver's checks would. The HTTP endpoints, X-Matrix and TLS are tested
elsewhere; this drives the federation services end to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ranvier.config import parse_config
from ranvier.core.events import Event, compute_content_hash
from ranvier.core.ids import UserID
from ranvier.core.redaction import redact
from ranvier.core.room_versions import RoomVersion
from ranvier.core.signing import SigningKey, verify_signature
from ranvier.homeserver import Homeserver
from ranvier.services.federation.backfill import FederationBackfill
from ranvier.services.federation.events import FederationEventHandler, PduCheckFailed
from ranvier.services.federation.joins import JoinService
from ranvier.services.federation.reads import FederationReads
from ranvier.services.federation.sender import FederationSender
from ranvier.storage import Database, open_database
from tests.conftest import acquire_migrated_postgres, copy_migrated_sqlite

NOW = 1_700_000_000_000


def wire(value: Any) -> Any:
    """What the other side parses: a JSON round trip."""
    return orjson.loads(orjson.dumps(value))


class Network:
    def __init__(self) -> None:
        self.keys: dict[str, SigningKey] = {}
        self.servers: dict[str, Server] = {}
        #: Every EDU delivered: (origin, destination, {"edu_type", "content"}).
        self.edus: list[tuple[str, str, Any]] = []
        #: Every /backfill asked: (origin, destination, event IDs).
        self.backfills: list[tuple[str, str, list[str]]] = []

    async def verify(self, version: RoomVersion, pdu: Mapping[str, Any]) -> Event:
        """The sender's server's signature and the content hash, as on receipt."""
        try:
            event = Event.from_pdu(version, wire(pdu))
            server = UserID.parse(event.sender).domain
            key = self.keys[server]
            signed = {k: v for k, v in redact(version, dict(event.pdu)).items() if k != "unsigned"}
            if not version.event_ids_in_pdu:
                signed.pop("event_id", None)
            verify_signature(signed, server, key.key_id, key.verify_key)
        except (ValueError, KeyError) as exc:
            raise PduCheckFailed(f"bad PDU: {exc}") from None
        if event.pdu.get("hashes", {}).get("sha256") != compute_content_hash(event.pdu):
            raise PduCheckFailed("content hash mismatch")
        return event


class Server:
    """One homeserver and its view of the network (the remote interfaces)."""

    def __init__(self, network: Network, hs: Homeserver) -> None:
        self.network = network
        self.hs = hs
        self.name = hs.server_name
        self.handler = FederationEventHandler(hs, self, network.verify)
        self.joins = JoinService(hs, self, network.verify, self.handler)
        self.reads = FederationReads(hs)
        hs.federation_backfill = FederationBackfill(hs, self, network.verify, self.handler)
        #: Replaces a peer's /backfill answer when set (a misbehaving server).
        self.backfill_answer: Any = None
        self.sender = FederationSender(hs, self, initial_retry_ms=60_000, jitter=lambda: 1.0)
        hs.federation_sender = self.sender
        self.client = NetworkClient(self, hs.federation_client)
        hs.federation_client = self.client  # type: ignore[assignment]
        self.down = False

    def _peer(self, destination: str) -> Server:
        peer = self.network.servers[destination]
        if peer.down:
            raise ConnectionError(f"{destination} is down")
        return peer

    # RemoteJoins
    async def make_join(
        self, destination: str, room_id: str, user_id: str, versions: Sequence[str]
    ) -> Mapping[str, Any]:
        peer = self._peer(destination)
        return wire(await peer.joins.make_join(self.name, room_id, user_id, versions))

    async def send_join(
        self, destination: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        peer = self._peer(destination)
        return wire(await peer.joins.send_join(self.name, room_id, event_id, wire(pdu)))

    # RemoteEvents
    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        earliest_events: Sequence[str],
        latest_events: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> list[Mapping[str, Any]]:
        peer = self._peer(destination)
        answer = await peer.reads.get_missing_events(
            self.name, room_id, earliest_events, latest_events, limit, min_depth
        )
        return list(wire(answer)["events"])

    async def state_ids(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]:
        answer = await self._peer(destination).reads.state_ids(self.name, room_id, event_id)
        return list(answer["pdu_ids"]), list(answer["auth_chain_ids"])

    async def event(self, destination: str, event_id: str) -> Mapping[str, Any] | None:
        answer = await self._peer(destination).reads.event(self.name, event_id)
        return wire(answer)["pdus"][0] if answer["pdus"] else None

    async def backfill(
        self, destination: str, room_id: str, event_ids: Sequence[str], limit: int
    ) -> list[Mapping[str, Any]]:
        peer = self._peer(destination)
        self.network.backfills.append((self.name, destination, list(event_ids)))
        if peer.backfill_answer is not None:
            return wire(peer.backfill_answer)  # type: ignore[no-any-return]
        answer = await peer.reads.backfill(self.name, room_id, event_ids, limit)
        return list(wire(answer)["pdus"])

    # Transport
    async def send_transaction(
        self, destination: str, txn_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        from ranvier.services.federation.sender import TransactionFailed

        try:
            peer = self._peer(destination)
        except ConnectionError as exc:
            raise TransactionFailed(None, str(exc)) from None
        body = wire(body)
        results: dict[str, Any] = {}
        for pdu in body["pdus"]:
            room = await peer.hs.rooms.store.get_room(pdu.get("room_id", ""))
            if room is None:
                continue
            from ranvier.core.room_versions import get_room_version

            try:
                event = await self.network.verify(get_room_version(room.room_version), pdu)
            except PduCheckFailed as exc:
                results[str(pdu.get("event_id"))] = {"error": str(exc)}
                continue
            outcome = await peer.handler.on_receive_pdu(self.name, event)
            results[event.event_id] = {} if outcome.error is None else {"error": outcome.error}
        for edu in body.get("edus", []):
            self.network.edus.append((self.name, destination, edu))
            await peer.hs.federation_edus.on_edu(self.name, edu["edu_type"], edu["content"])
        return {"pdus": results}


class NetworkClient:
    """Stands for ``hs.federation_client``: the queries one server makes of
    another (profiles, aliases, devices, keys) answered by the peer's
    FederationQueries, as its HTTP endpoints would (api/federation/query.py)."""

    def __init__(self, server: Server, original: Any) -> None:
        self.server = server
        self.original = original
        self.calls: list[tuple[str, str, str]] = []

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        content: Any = None,
        headers: Any = None,
    ) -> Any:
        from urllib.parse import unquote

        from ranvier.errors import MatrixError
        from ranvier.services.federation.client import (
            FederationResponseError,
            FederationUnreachable,
        )

        self.calls.append((method, destination, path))
        try:
            peer = self.server._peer(destination)
        except (ConnectionError, KeyError):
            raise FederationUnreachable(destination, "down") from None
        queries = peer.hs.federation_queries
        prefix = "/_matrix/federation/v1"
        query = dict(query or {})
        try:
            if path.startswith(prefix + "/user/devices/"):
                answer = await queries.user_devices(unquote(path.rpartition("/")[2]))
            elif path == prefix + "/user/keys/query":
                answer = await queries.user_keys_query(wire(content))
            elif path == prefix + "/user/keys/claim":
                answer = await queries.user_keys_claim(wire(content))
            elif path == prefix + "/query/profile":
                answer = await queries.profile(query["user_id"], query.get("field"))
            elif path == prefix + "/query/directory":
                answer = await queries.directory(query["room_alias"])
            else:
                raise MatrixError(404, "M_UNRECOGNIZED", path)
        except MatrixError as exc:
            raise FederationResponseError(
                destination, exc.status, {"errcode": exc.errcode, "error": str(exc)}
            ) from None
        return wire(answer)

    async def close(self) -> None:
        await self.original.close()


async def _database(
    dsn_kind: str, tmp_path: Path, name: str
) -> tuple[Database, Callable[[], None] | None]:
    """A migrated database of ``dsn_kind`` (see tests/conftest.py), and for PostgreSQL
    what gives it back to the pool once closed."""
    if dsn_kind == "sqlite":
        path = tmp_path / (name + ".db")
        copy_migrated_sqlite(path)
        return await open_database(f"sqlite:///{path}"), None
    dsn, release = await acquire_migrated_postgres()
    try:
        return await open_database(dsn), release
    except BaseException:
        release()
        raise


async def make_network(
    engine: str, tmp_path: Path, names: Sequence[str] = ("a.test", "b.test")
) -> AsyncIterator[Network]:
    network = Network()
    opened: list[tuple[Homeserver, Callable[[], None] | None]] = []
    try:
        for name in names:
            database, release = await _database(engine, tmp_path, name)
            config = parse_config({"server_name": name}, tmp_path, env={})
            key = SigningKey.generate("k1")
            network.keys[name] = key
            hs = Homeserver(config, database, key, lambda: NOW)
            opened.append((hs, release))
            network.servers[name] = Server(network, hs)
        yield network
    finally:
        for hs, release in opened:
            await hs.close()
            if release is not None:
                release()
