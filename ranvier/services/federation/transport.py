"""The federation services' requests to other servers, over the HTTP client.

One adapter implements the three remote interfaces the services are written
against: ``RemoteEvents`` (filling gaps in a room's DAG), ``RemoteJoins``
(joining a room through a resident server) and the sender's ``Transport``
(PUT /send), plus the alias lookup of the client API's joins. Every request
goes through ``FederationClient.request_json``, which signs it with X-Matrix
and applies discovery, TLS and the SSRF guard. Path parts are percent-encoded
here (room, event and user IDs hold ``!``, ``$``, ``:``, ``/``...): the
X-Matrix signature covers the path as sent.

Answers are only shape-checked here; every PDU in them is checked by the
caller (``PduChecker.verify``), whatever its source (CVE-2022-39200).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from ranvier.errors import MatrixError
from ranvier.services.federation.client import (
    FederationError,
    FederationResponseError,
    Query,
)
from ranvier.services.federation.sender import TransactionFailed

FEDERATION_V1 = "/_matrix/federation/v1"
FEDERATION_V2 = "/_matrix/federation/v2"


class JsonRequester(Protocol):
    """What the adapter needs of ``FederationClient`` (a fake in tests)."""

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any: ...


def path_part(value: str) -> str:
    """One percent-encoded path segment (nothing left unescaped but unreserved characters)."""
    return quote(value, safe="")


def _bad_answer(destination: str, what: str) -> MatrixError:
    return MatrixError(502, "M_UNKNOWN", f"{destination} sent a malformed {what} answer")


def _object(answer: Any, destination: str, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise _bad_answer(destination, what)
    return answer


def _string_list(value: Any, destination: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad_answer(destination, what)
    return value


class FederationTransport:
    """``RemoteEvents``, ``RemoteJoins`` and ``Transport`` over one federation client."""

    def __init__(self, client: JsonRequester) -> None:
        self.client = client

    # --- RemoteEvents ----------------------------------------------------------------------

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        earliest_events: Sequence[str],
        latest_events: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> list[Mapping[str, Any]]:
        """POST /v1/get_missing_events/{roomId} (Server-Server API, "Retrieving events")."""
        answer = await self.client.request_json(
            "POST",
            destination,
            f"{FEDERATION_V1}/get_missing_events/{path_part(room_id)}",
            content={
                "earliest_events": list(earliest_events),
                "latest_events": list(latest_events),
                "limit": limit,
                "min_depth": min_depth,
            },
        )
        events = _object(answer, destination, "get_missing_events").get("events")
        if not isinstance(events, list):
            raise _bad_answer(destination, "get_missing_events")
        return [pdu for pdu in events if isinstance(pdu, dict)]

    async def state_ids(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]:
        """GET /v1/state_ids/{roomId}?event_id=: (state IDs, auth chain IDs)."""
        answer = _object(
            await self.client.request_json(
                "GET",
                destination,
                f"{FEDERATION_V1}/state_ids/{path_part(room_id)}",
                query={"event_id": event_id},
            ),
            destination,
            "state_ids",
        )
        return (
            _string_list(answer.get("pdu_ids"), destination, "state_ids"),
            _string_list(answer.get("auth_chain_ids"), destination, "state_ids"),
        )

    async def event(self, destination: str, event_id: str) -> Mapping[str, Any] | None:
        """GET /v1/event/{eventId}: the one PDU of the transaction answered; None if
        the server does not have it (404)."""
        try:
            answer = await self.client.request_json(
                "GET", destination, f"{FEDERATION_V1}/event/{path_part(event_id)}"
            )
        except FederationResponseError as exc:
            if exc.status == 404:
                return None
            raise
        pdus = _object(answer, destination, "event").get("pdus")
        if not isinstance(pdus, list) or len(pdus) != 1 or not isinstance(pdus[0], dict):
            raise _bad_answer(destination, "event")
        pdu: dict[str, Any] = pdus[0]
        return pdu

    async def backfill(
        self, destination: str, room_id: str, event_ids: Sequence[str], limit: int
    ) -> list[Mapping[str, Any]]:
        """GET /v1/backfill/{roomId}?v=...&limit= (Server-Server API, "Backfilling
        and retrieving missing events"): the PDUs of the transaction answered."""
        answer = await self.client.request_json(
            "GET",
            destination,
            f"{FEDERATION_V1}/backfill/{path_part(room_id)}",
            query={"v": list(event_ids), "limit": str(limit)},
        )
        pdus = _object(answer, destination, "backfill").get("pdus")
        if not isinstance(pdus, list):
            raise _bad_answer(destination, "backfill")
        return [pdu for pdu in pdus if isinstance(pdu, dict)]

    # --- RemoteJoins -----------------------------------------------------------------------

    async def make_join(
        self, destination: str, room_id: str, user_id: str, versions: Sequence[str]
    ) -> Mapping[str, Any]:
        """GET /v1/make_join/{roomId}/{userId}?ver=...: the template. A 4xx answer
        becomes the MatrixError the resident server gave (403 stays 403)."""
        path = f"{FEDERATION_V1}/make_join/{path_part(room_id)}/{path_part(user_id)}"
        answer = await self._matrix_errors("GET", destination, path, query={"ver": list(versions)})
        return _object(answer, destination, "make_join")

    async def send_join(
        self, destination: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """PUT /v2/send_join/{roomId}/{eventId}: the room's state and auth chain."""
        path = f"{FEDERATION_V2}/send_join/{path_part(room_id)}/{path_part(event_id)}"
        answer = await self._matrix_errors("PUT", destination, path, content=dict(pdu))
        return _object(answer, destination, "send_join")

    async def _matrix_errors(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        content: Any = None,
    ) -> Any:
        try:
            return await self.client.request_json(
                method, destination, path, query=query, content=content
            )
        except FederationResponseError as exc:
            if 400 <= exc.status < 500 and exc.errcode:
                extra = {}
                body = exc.body if isinstance(exc.body, dict) else {}
                if isinstance(body.get("room_version"), str):
                    extra["room_version"] = body["room_version"]
                raise MatrixError(
                    exc.status, exc.errcode, exc.error or f"{destination} refused", **extra
                ) from None
            raise

    # --- the sender's Transport ----------------------------------------------------------

    async def send_transaction(
        self, destination: str, txn_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """PUT /v1/send/{txnId}; ``TransactionFailed`` unless answered 200."""
        try:
            answer = await self.client.request_json(
                "PUT",
                destination,
                f"{FEDERATION_V1}/send/{path_part(txn_id)}",
                content=dict(body),
            )
        except FederationResponseError as exc:
            raise TransactionFailed(exc.status, str(exc)) from None
        except FederationError as exc:
            # Unreachable, or an answer that is not JSON / too large: no usable
            # answer at all, so retried like a connection failure.
            raise TransactionFailed(None, str(exc)) from None
        return answer if isinstance(answer, dict) else {}

    # --- queries (client API) ----------------------------------------------------------------

    async def query_directory(self, destination: str, room_alias: str) -> tuple[str, list[str]]:
        """GET /v1/query/directory?room_alias=: (room ID, servers in the room).
        Unknown alias → 404 M_NOT_FOUND."""
        answer = _object(
            await self._matrix_errors(
                "GET",
                destination,
                f"{FEDERATION_V1}/query/directory",
                query={"room_alias": room_alias},
            ),
            destination,
            "query/directory",
        )
        room_id = answer.get("room_id")
        if not isinstance(room_id, str):
            raise _bad_answer(destination, "query/directory")
        servers = answer.get("servers")
        if not isinstance(servers, list):
            servers = []
        return room_id, [server for server in servers if isinstance(server, str)]
