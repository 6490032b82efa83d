"""Fake remote servers for federation tests: their own ed25519 keys, key
documents, signed requests, and a scripted ``fetch_json`` standing in for the
federation HTTP client (no network)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ranvier.core.signing import SigningKey, encode_base64, sign_json
from ranvier.core.x_matrix import authorization_header
from ranvier.services.federation.keyring import parse_key_document
from ranvier.storage.server_keys import ServerKeyRow


@dataclass
class FakeServer:
    """A remote homeserver: a name and a signing key of its own."""

    server_name: str
    key: SigningKey = field(default_factory=lambda: SigningKey.generate("remote1"))

    def key_document(
        self,
        valid_until_ts: int,
        *,
        old_verify_keys: dict[str, tuple[SigningKey, int]] | None = None,
    ) -> dict[str, Any]:
        """What its ``GET /_matrix/key/v2/server`` answers, self-signed."""
        document = {
            "server_name": self.server_name,
            "verify_keys": {self.key.key_id: {"key": encode_base64(self.key.verify_key)}},
            "old_verify_keys": {
                key_id: {"key": encode_base64(old.verify_key), "expired_ts": expired_ts}
                for key_id, (old, expired_ts) in (old_verify_keys or {}).items()
            },
            "valid_until_ts": valid_until_ts,
        }
        return sign_json(document, self.server_name, self.key)

    def key_rows(self, fetched_ts: int, valid_until_ts: int) -> list[ServerKeyRow]:
        """Its keys as the key store holds them after a fetch at ``fetched_ts``."""
        return parse_key_document(self.key_document(valid_until_ts), self.server_name, fetched_ts)

    def authorization(self, destination: str, method: str, uri: str, content: Any = None) -> str:
        """The X-Matrix header it sends with a request."""
        return authorization_header(self.key, self.server_name, destination, method, uri, content)


Answer = Any | Exception | Callable[[Any], Any]


class FakeFederation:
    """A scripted ``fetch_json(destination, method, path, content)``.

    ``answers[(destination, path)]`` is returned (a deep copy), raised if an
    exception, or called with the request content if callable; anything
    unscripted raises ConnectionError. ``calls`` records every request;
    ``gate``, when set, holds every answer until it is opened.
    """

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Answer] = {}
        self.calls: list[tuple[str, str, str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, destination: str, method: str, path: str, content: Any) -> Any:
        self.calls.append((destination, method, path, copy.deepcopy(content)))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get((destination, path))
        if answer is None:
            raise ConnectionError(f"{destination} is unreachable")
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(content)
        return copy.deepcopy(answer)

    def serve_keys(self, server: FakeServer, valid_until_ts: int) -> None:
        self.answers[(server.server_name, "/_matrix/key/v2/server")] = server.key_document(
            valid_until_ts
        )
