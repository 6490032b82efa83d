"""Helpers for the directory, hierarchy, room summary and OpenID tests: an app
on each database engine, and a scripted federation client standing for other
servers."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from ranvier.api.http import HOMESERVER
from ranvier.services.federation.client import FederationUnreachable
from tests.api.conftest import MakeClient
from tests.api.rooms_support import ROOMS_CONFIG

Client = TestClient[Any, Any]
V1 = "/_matrix/client/v1"
FED_V1 = "/_matrix/federation/v1"


async def engine_client(make_client: MakeClient, migrated_dsn: str) -> Client:
    """The app on the engine of ``migrated_dsn`` (tests use both)."""
    return await make_client({**ROOMS_CONFIG, "database": migrated_dsn})


class ScriptedFederation:
    """Stands for ``hs.federation_client``: answers by (destination, path); a
    missing answer is an unreachable server; calls are recorded."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, str, Any, Any]] = []

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Any = None,
        content: Any = None,
        headers: Any = None,
    ) -> Any:
        self.calls.append((method, destination, path, query, content))
        answer = self.answers.get((destination, path))
        if answer is None:
            raise FederationUnreachable(destination, "unreachable")
        if isinstance(answer, Exception):
            raise answer
        return answer(query, content) if callable(answer) else answer

    async def close(self) -> None:
        pass


def script(client: Client, answers: dict[tuple[str, str], Any]) -> ScriptedFederation:
    fake = ScriptedFederation(answers)
    client.app[HOMESERVER].federation_client = fake
    return fake
