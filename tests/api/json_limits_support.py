"""Helpers for the issue 9 tests: deeply nested JSON and requests sent byte for byte."""

from __future__ import annotations

from typing import Any

import orjson

from tests.api.rooms_support import V3, Client, User


def nested(depth: int) -> bytes:
    """A JSON object ``depth`` containers deep: ``{"a":{"a":...1...}}``."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_value(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(nested(depth))
    return value


async def raw(
    client: Client, method: str, path: str, user: User | None, body: bytes
) -> tuple[int, Any]:
    """A request whose body is sent byte for byte (aiohttp's ``json=`` would recurse)."""
    headers = {"Content-Type": "application/json", **(user.headers if user else {})}
    response = await client.request(method, V3 + path, data=body, headers=headers)
    payload = await response.json() if response.content_type == "application/json" else None
    return response.status, payload
