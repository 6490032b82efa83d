"""Federation queries, both ways (Server-Server API, "Querying for information",
"Device Management", "End-to-End Encryption"). The public room directory and
space hierarchies are served by ranvier/services/directory.py and spaces.py.

As the server asked: profiles and aliases of our users and rooms, our users'
devices and keys (GET /user/devices, POST /user/keys/query and /claim). Other servers see no device
display names (as Synapse's default ``allow_device_name_lookup_over_federation:
false``) and no user-signing keys.

As the asking server, for local clients: remote profiles and aliases, and
remote users' keys: /keys/query answers from the cached device list when it
is fresh (ranvier/services/federation/edus.py) and otherwise asks the user's
server; a server that cannot be reached goes into ``failures`` (Client-Server
API, POST /keys/query: "If the homeserver could be reached, but the user or
device was unknown, no failure is recorded").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.ids import RoomAlias, UserID, is_mine, is_my_user_id, server_name_of
from ranvier.errors import MatrixError
from ranvier.services.federation.client import FederationResponseError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: How long a client's /keys/query or /keys/claim waits for other servers
#: (the ``timeout`` of keys.yaml defaults to 10 s).
REMOTE_KEYS_TIMEOUT_S = 10.0
PROFILE_FIELDS = ("displayname", "avatar_url")


def _federation_failure(exc: BaseException) -> dict[str, Any]:
    """A ``failures`` entry (Synapse's shape: the status and a message)."""
    status = exc.status if isinstance(exc, FederationResponseError) else 503
    return {"status": status, "message": str(exc)[:500] or type(exc).__name__}


class FederationQueries:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.server_name = hs.server_name

    def _is_local(self, user_id: str) -> bool:
        return is_my_user_id(user_id, self.server_name)

    async def _ask(
        self, method: str, destination: str, path: str, *, query: Any = None, content: Any = None
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if query is not None:
            kwargs["query"] = query
        if content is not None:
            kwargs["content"] = content
        return await self.hs.federation_client.request_json(method, destination, path, **kwargs)

    # --- as the server asked ----------------------------------------------------------

    async def profile(self, user_id: str, field: str | None) -> dict[str, Any]:
        """GET /query/profile: 404 for users not ours or unknown, or a missing field."""
        if not UserID.is_valid(user_id) or not self._is_local(user_id):
            raise MatrixError(404, "M_NOT_FOUND", "The user is not one of this server's.")
        profile = await self.hs.profiles.get_profile(user_id)
        if field is None:
            return profile
        if field not in profile:
            raise MatrixError(404, "M_NOT_FOUND", f"The user has no {field!r}.")
        return {field: profile[field]}

    async def directory(self, alias: str) -> dict[str, Any]:
        """GET /query/directory: the room and the servers in it (ours first)."""
        if not RoomAlias.is_valid(alias) or not is_mine(alias, self.server_name):
            raise MatrixError(404, "M_NOT_FOUND", "Room alias not found.")
        found = await self.hs.rooms.store.get_alias(alias)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room alias not found.")
        room_id = found[0]
        return {"room_id": room_id, "servers": await self.servers_in_room(room_id)}

    async def servers_in_room(self, room_id: str) -> list[str]:
        others = set(await self.hs.rooms.joined_servers(room_id)) - {self.server_name, ""}
        return [self.server_name, *sorted(others)]

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        """GET /user/devices/{userId}: a local user's devices with their keys, and
        the stream_id of the last m.device_list_update we sent about them."""
        if not UserID.is_valid(user_id) or not self._is_local(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "The user is not one of this server's.")
        edus = self.hs.federation_edus
        # Anything not yet announced is announced now, so stream_id covers it.
        await edus.on_local_device_change(user_id)
        # The stream_id is read before the devices: a change committed between
        # the two reads is then in the devices and announced after stream_id (the
        # peer applies that update again, harmlessly). Read the other way round,
        # the answer could name an update whose keys it does not hold, and the
        # peer, counting that update as covered, would never learn the keys.
        stream_id = await edus.store.latest_announced(user_id)
        devices, cross_signing = await edus.current_devices(user_id)
        answer: dict[str, Any] = {
            "user_id": user_id,
            "stream_id": stream_id,
            "devices": [devices[d] for d in sorted(devices)],
        }
        if "master" in cross_signing:
            answer["master_key"] = cross_signing["master"]
        if "self_signing" in cross_signing:
            answer["self_signing_key"] = cross_signing["self_signing"]
        return answer

    async def user_keys_query(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /user/keys/query: only our users' keys (others are left out)."""
        device_keys = body.get("device_keys")
        e2e = self.hs.e2e_keys
        query = e2e._check_user_map(device_keys, "device_keys")
        local: dict[str, list[str]] = {}
        for user_id, devices in query.items():
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise MatrixError(400, "M_BAD_JSON", "device_keys must map users to device lists.")
            if self._is_local(user_id):
                local[user_id] = devices
        answer = await e2e.local_key_answers(None, local, display_names=False)
        del answer["user_signing_keys"]
        return answer

    async def user_keys_claim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /user/keys/claim: one-time (else fallback) keys of our users' devices."""
        e2e = self.hs.e2e_keys
        query = e2e._check_user_map(body.get("one_time_keys"), "one_time_keys")
        local: dict[str, dict[str, str]] = {}
        for user_id, devices in query.items():
            if not isinstance(devices, dict) or not all(
                isinstance(alg, str) and alg for alg in devices.values()
            ):
                raise MatrixError(400, "M_BAD_JSON", "one_time_keys must map devices to algorithms.")
            if self._is_local(user_id):
                local[user_id] = devices
        return {"one_time_keys": await e2e.claim_local_keys(local)}

    # --- as the asking server -------------------------------------------------------------

    async def remote_profile(self, user_id: str) -> dict[str, Any]:
        """A remote user's profile; 404 when their server has none, cannot be
        reached or answers nonsense (profile.yaml lists no other error for GET)."""
        server = server_name_of(user_id) or ""
        try:
            answer = await self._ask(
                "GET", server, "/_matrix/federation/v1/query/profile", query={"user_id": user_id}
            )
        except FederationResponseError as exc:
            if exc.status == 404:
                raise MatrixError(404, "M_NOT_FOUND", "Profile not found.") from None
            raise MatrixError(404, "M_NOT_FOUND", f"{server} answered {exc.status}.") from None
        except Exception as exc:
            logger.info("Profile query of %s failed: %s", user_id, exc)
            raise MatrixError(404, "M_NOT_FOUND", f"{server} could not be reached.") from None
        if not isinstance(answer, dict):
            raise MatrixError(404, "M_NOT_FOUND", f"{server} gave an invalid profile.")
        return answer

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """GET /directory/room/{roomAlias}: ours from the database (the servers
        in the room, ours first), another server's asked of it."""
        if RoomAlias.is_valid(alias) and not is_mine(alias, self.server_name):
            return await self.remote_alias(alias)
        room_id = await self.hs.rooms.get_alias(alias)
        return room_id, await self.servers_in_room(room_id)

    async def remote_alias(self, alias: str) -> tuple[str, list[str]]:
        """A remote alias's room and servers, asked of the alias's server; 404 as
        for profiles when it cannot say (directory.yaml: no 5xx for GET)."""
        server = server_name_of(alias) or ""
        try:
            answer = await self._ask(
                "GET", server, "/_matrix/federation/v1/query/directory", query={"room_alias": alias}
            )
        except FederationResponseError as exc:
            if exc.status == 404:
                raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found.") from None
            raise MatrixError(404, "M_NOT_FOUND", f"{server} answered {exc.status}.") from None
        except Exception as exc:
            logger.info("Directory query of %s failed: %s", alias, exc)
            raise MatrixError(404, "M_NOT_FOUND", f"{server} could not be reached.") from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not isinstance(servers, list):
            raise MatrixError(404, "M_NOT_FOUND", f"{server} gave an invalid answer.")
        return room_id, [s for s in servers if isinstance(s, str)]

    async def query_remote_keys(
        self, remote: Mapping[str, list[str]], result: dict[str, Any]
    ) -> None:
        """Add remote users' keys to a /keys/query ``result`` (its failures too)."""
        by_server: dict[str, dict[str, list[str]]] = {}
        edus = self.hs.federation_edus
        for user_id, devices in remote.items():
            if await edus.is_fresh(user_id):
                await self._keys_from_cache(user_id, devices, result)
                continue
            by_server.setdefault(server_name_of(user_id) or "", {})[user_id] = devices
            if (await edus.store.get_device_list(user_id)) is not None:
                edus.schedule_resync(user_id)  # stale: have it fresh next time
        answers = await asyncio.gather(
            *(self._ask_keys(server, users) for server, users in by_server.items()),
            return_exceptions=True,
        )
        for (server, users), answer in zip(by_server.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                result["failures"][server] = _federation_failure(answer)
                continue
            self._merge_remote_keys(users, answer, result)

    async def _ask_keys(self, server: str, users: Mapping[str, list[str]]) -> Any:
        return await asyncio.wait_for(
            self._ask(
                "POST", server, "/_matrix/federation/v1/user/keys/query",
                content={"device_keys": dict(users)},
            ),
            REMOTE_KEYS_TIMEOUT_S,
        )

    @staticmethod
    def _merge_remote_keys(
        users: Mapping[str, list[str]], answer: Any, result: dict[str, Any]
    ) -> None:
        """Take from the answer only the users asked for (of that server)."""
        if not isinstance(answer, dict):
            return
        for field in ("device_keys", "master_keys", "self_signing_keys"):
            values = answer.get(field)
            if not isinstance(values, dict):
                continue
            for user_id, value in values.items():
                if user_id not in users or not isinstance(value, dict):
                    continue
                if field == "device_keys":
                    # Each device's keys must say they are that device's.
                    value = {
                        device_id: keys
                        for device_id, keys in value.items()
                        if isinstance(keys, dict)
                        and keys.get("user_id") == user_id
                        and keys.get("device_id") == device_id
                    }
                elif value.get("user_id") != user_id:
                    continue
                result[field][user_id] = value

    async def _keys_from_cache(
        self, user_id: str, devices: list[str], result: dict[str, Any]
    ) -> None:
        store = self.hs.federation_edus.store
        rows = await store.devices(user_id, devices or None)
        keys: dict[str, Any] = {}
        for row in rows:
            if row.key_json is None:
                continue
            obj = orjson.loads(row.key_json)
            unsigned = obj.get("unsigned") if isinstance(obj.get("unsigned"), dict) else {}
            if row.display_name is not None:
                unsigned = {**unsigned, "device_display_name": row.display_name}
            if unsigned:
                obj["unsigned"] = unsigned
            keys[row.device_id] = obj
        result["device_keys"][user_id] = keys
        for key_type, key_json in (await store.cross_signing_keys(user_id)).items():
            result[f"{key_type}_keys"][user_id] = orjson.loads(key_json)

    async def claim_remote_keys(
        self,
        remote: Mapping[str, Mapping[str, str]],
        claimed: dict[str, Any],
        failures: dict[str, Any],
    ) -> None:
        """Claim remote users' keys from their servers for a /keys/claim."""
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in remote.items():
            by_server.setdefault(server_name_of(user_id) or "", {})[user_id] = dict(devices)
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(
                    self._ask(
                        "POST", server, "/_matrix/federation/v1/user/keys/claim",
                        content={"one_time_keys": users},
                    ),
                    REMOTE_KEYS_TIMEOUT_S,
                )
                for server, users in by_server.items()
            ),
            return_exceptions=True,
        )
        for (server, users), answer in zip(by_server.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                failures[server] = _federation_failure(answer)
                continue
            keys = answer.get("one_time_keys") if isinstance(answer, dict) else None
            if not isinstance(keys, dict):
                continue
            for user_id, value in keys.items():
                if user_id in users and isinstance(value, dict):
                    claimed[user_id] = value
