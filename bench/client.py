"""A minimal Matrix Client-Server API client for the benchmark: aiohttp over HTTP.

The harness measures both servers through the same door, so this is all it
speaks: no server internals, no admin APIs. An endpoint a server does not
implement answers 404/405 ``M_UNRECOGNIZED`` (Client-Server API, "Common error
codes"); that becomes :class:`NotImplementedYet`, which the report prints as
"n/a" instead of a number.
"""

from __future__ import annotations

import itertools
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

# Every request is bounded: a stuck server fails the scenario, it does not hang the run.
REQUEST_TIMEOUT_S = 120.0
PASSWORD = "bench-Password-1"

_txn_ids = itertools.count()


class NotImplementedYet(Exception):
    """The server answered M_UNRECOGNIZED: it does not implement this endpoint (yet)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        self.endpoint = endpoint


class BenchError(Exception):
    """The server answered an error where the benchmark needs a success."""


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass
class User:
    user_id: str
    localpart: str
    access_token: str


class Client:
    """Requests against one server's base URL, with an optional access token."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url
        self.last_response_bytes = 0  # size of the last answer's body (for sequential use)

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        token: str | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (200,),
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> tuple[int, dict[str, Any]]:
        """Send one request; ``path`` is already percent-encoded; ``endpoint`` names it.

        Returns (status, JSON body) for a status in ``ok_statuses``; raises
        NotImplementedYet for M_UNRECOGNIZED and BenchError for anything else.
        """
        url = URL(self.base_url + path, encoded=True)
        if params:
            url = url.update_query(params)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method,
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            raw = await response.read()
            status = response.status
        self.last_response_bytes = len(raw)
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = {"raw": raw[:200].decode(errors="replace")}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
        if status in ok_statuses:
            return status, parsed
        if status in (404, 405) and parsed.get("errcode") == "M_UNRECOGNIZED":
            raise NotImplementedYet(endpoint)
        raise BenchError(f"{endpoint} answered {status}: {str(parsed)[:300]}")

    # --- the endpoints the scenarios use ---------------------------------------------

    async def versions(self) -> dict[str, Any]:
        return (await self.request("GET", "/_matrix/client/versions", endpoint="GET /versions"))[1]

    async def register(self, localpart: str, password: str = PASSWORD) -> User:
        """POST /register with the m.login.dummy stage (User-Interactive Authentication)."""
        body: dict[str, Any] = {
            "username": localpart,
            "password": password,
            "initial_device_display_name": "bench",
            "auth": {"type": "m.login.dummy"},
        }
        status, answer = await self.request(
            "POST",
            "/_matrix/client/v3/register",
            endpoint="POST /register",
            body=body,
            ok_statuses=(200, 401),
        )
        if status == 401:  # a server that wants the session of a started UIA flow first
            if "session" not in answer:
                raise BenchError(f"POST /register answered 401 without a session: {answer}")
            body["auth"] = {"type": "m.login.dummy", "session": answer["session"]}
            _, answer = await self.request(
                "POST", "/_matrix/client/v3/register", endpoint="POST /register", body=body
            )
        return User(answer["user_id"], localpart, answer["access_token"])

    async def login(self, localpart: str, password: str = PASSWORD) -> User:
        _, answer = await self.request(
            "POST",
            "/_matrix/client/v3/login",
            endpoint="POST /login",
            body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
                "initial_device_display_name": "bench",
            },
        )
        return User(answer["user_id"], localpart, answer["access_token"])

    async def create_room(self, user: User, *, public: bool = False) -> str:
        _, answer = await self.request(
            "POST",
            "/_matrix/client/v3/createRoom",
            endpoint="POST /createRoom",
            token=user.access_token,
            body={"preset": "public_chat" if public else "private_chat"},
        )
        room_id: str = answer["room_id"]
        return room_id

    async def join(self, user: User, room_id: str, *, via: str | None = None) -> None:
        """POST /join; ``via`` names the server to join through when ours is not in the room."""
        await self.request(
            "POST",
            f"/_matrix/client/v3/join/{quote(room_id)}",
            endpoint="POST /join/{roomIdOrAlias}",
            token=user.access_token,
            body={},
            params=None if via is None else {"via": via},
        )

    async def send_text(self, user: User, room_id: str, text: str) -> str:
        txn_id = f"bench{next(_txn_ids)}.{time.monotonic_ns()}"
        _, answer = await self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn_id}",
            endpoint="PUT /rooms/{roomId}/send/{eventType}/{txnId}",
            token=user.access_token,
            body={"msgtype": "m.text", "body": text},
        )
        event_id: str = answer["event_id"]
        return event_id

    async def send_event(
        self, user: User, room_id: str, event_type: str, content: dict[str, Any]
    ) -> str:
        txn_id = f"bench{next(_txn_ids)}.{time.monotonic_ns()}"
        _, answer = await self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/{quote(event_type)}/{txn_id}",
            endpoint="PUT /rooms/{roomId}/send/{eventType}/{txnId}",
            token=user.access_token,
            body=content,
        )
        event_id: str = answer["event_id"]
        return event_id

    async def search(self, user: User, criteria: dict[str, Any]) -> dict[str, Any]:
        """POST /search, the room_events category; its ``room_events`` answer."""
        _, answer = await self.request(
            "POST",
            "/_matrix/client/v3/search",
            endpoint="POST /search",
            token=user.access_token,
            body={"search_categories": {"room_events": criteria}},
        )
        room_events: dict[str, Any] = answer["search_categories"]["room_events"]
        return room_events

    async def define_filter(self, user: User, definition: dict[str, Any]) -> str:
        _, answer = await self.request(
            "POST",
            f"/_matrix/client/v3/user/{quote(user.user_id)}/filter",
            endpoint="POST /user/{userId}/filter",
            token=user.access_token,
            body=definition,
        )
        filter_id: str = answer["filter_id"]
        return filter_id

    async def sync(
        self,
        user: User,
        *,
        since: str | None = None,
        timeout_ms: int = 0,
        filter_id: str | None = None,
    ) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        if filter_id is not None:
            params["filter"] = filter_id
        _, answer = await self.request(
            "GET",
            "/_matrix/client/v3/sync",
            endpoint="GET /sync",
            token=user.access_token,
            params=params,
            timeout_s=REQUEST_TIMEOUT_S + timeout_ms / 1000,
        )
        return answer


def timeline_bodies(sync_answer: dict[str, Any], room_id: str) -> list[str]:
    """The ``body`` of every timeline event of ``room_id`` in a /sync answer."""
    room = sync_answer.get("rooms", {}).get("join", {}).get(room_id, {})
    events = room.get("timeline", {}).get("events", [])
    return [
        event["content"]["body"]
        for event in events
        if isinstance(event.get("content"), dict) and isinstance(event["content"].get("body"), str)
    ]
