"""User profiles (Client-Server API, "Profiles"; data/api/client-server/profile.yaml).

Fields of local users are stored as JSON values. ``displayname`` defaults to
the localpart until the user sets or deletes it (as Synapse sets it at
registration). Changing ``displayname`` or ``avatar_url`` updates the user's
member event in every joined room (``hs.rooms.on_profile_changed``).
Profiles of users on other servers need federation and are not available yet.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.ids import UserID, is_my_user_id
from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: "the total profile MUST be under 64 KiB".
MAX_PROFILE_BYTES = 64 * 1024
#: M_KEY_TOO_LARGE: "the maximum allowed key length of 255 bytes".
MAX_KEY_BYTES = 255
#: Common Namespaced Identifier Grammar (custom profile keys).
_NAMESPACED_KEY = re.compile(r"[a-z][a-z0-9\-_.]*\Z")
MEMBER_EVENT_FIELDS = ("displayname", "avatar_url")


class ProfileService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs

    def _is_local(self, user_id: str) -> bool:
        return is_my_user_id(user_id, self.hs.server_name)

    async def _require_local_user(self, user_id: str) -> None:
        if not UserID.is_valid(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a user ID: {user_id!r}")
        if not self._is_local(user_id):
            raise MatrixError(
                404,
                "M_NOT_FOUND",
                f"Profile of {user_id} is on another server; federation is not available yet",
            )
        if not await self.hs.accounts.user_exists(user_id):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown user {user_id}")

    async def _fields(self, user_id: str) -> dict[str, Any]:
        stored = await self.hs.rooms.store.get_profile_fields(user_id)
        profile: dict[str, Any] = {}
        if "displayname" not in stored:
            profile["displayname"] = user_id[1:].partition(":")[0]
        for key, value in stored.items():
            if key in MEMBER_EVENT_FIELDS and value is None:
                continue  # removed
            profile[key] = value
        return profile

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        """The whole profile; 404 for unknown users. Other servers' users are
        asked of their server (Server-Server API, "Querying for information")."""
        if UserID.is_valid(user_id) and not self._is_local(user_id):
            return await self.hs.federation_queries.remote_profile(user_id)
        await self._require_local_user(user_id)
        return await self._fields(user_id)

    async def get_profile_or_empty(self, user_id: str) -> dict[str, Any]:
        """The profile of a local user, ``{}`` for anyone else (for member events)."""
        if not self._is_local(user_id) or not await self.hs.accounts.user_exists(user_id):
            return {}
        return await self._fields(user_id)

    async def get_field(self, user_id: str, key: str) -> Any:
        profile = await self.get_profile(user_id)
        if key not in profile:
            raise MatrixError(404, "M_NOT_FOUND", f"{user_id} has no profile field {key!r}")
        return profile[key]

    def _check_key(self, key: str) -> None:
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise MatrixError(400, "M_KEY_TOO_LARGE", "Profile keys are at most 255 bytes")
        if key not in (*MEMBER_EVENT_FIELDS, "m.tz") and not _NAMESPACED_KEY.match(key):
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid profile key {key!r}")

    async def _check_writer(self, requester_user: str, user_id: str) -> None:
        if requester_user != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You may only change your own profile")
        await self._require_local_user(user_id)

    async def set_field(self, requester_user: str, user_id: str, key: str, value: Any) -> None:
        self._check_key(key)
        await self._check_writer(requester_user, user_id)
        if key in ("displayname", "avatar_url", "m.tz") and not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", f"{key} must be a string")
        if key == "displayname" and len(value) > 256:
            raise MatrixError(400, "M_INVALID_PARAM", "displayname is longer than 256 characters")
        profile = await self._fields(user_id)
        profile[key] = value
        if len(orjson.dumps(profile)) > MAX_PROFILE_BYTES:
            raise MatrixError(400, "M_PROFILE_TOO_LARGE", "The profile would exceed 64 KiB")
        await self.hs.rooms.store.set_profile_field(user_id, key, value)
        if key in MEMBER_EVENT_FIELDS:
            await self.hs.user_directory.on_profile_changed(user_id)
            await self.hs.rooms.on_profile_changed(user_id)

    async def delete_field(self, requester_user: str, user_id: str, key: str) -> None:
        self._check_key(key)
        await self._check_writer(requester_user, user_id)
        if key in MEMBER_EVENT_FIELDS:
            # Keep a null so the default displayname does not come back.
            await self.hs.rooms.store.set_profile_field(user_id, key, None)
            await self.hs.user_directory.on_profile_changed(user_id)
            await self.hs.rooms.on_profile_changed(user_id)
        else:
            await self.hs.rooms.store.delete_profile_field(user_id, key)
