"""The user directory: ``POST /user_directory/search`` (Client-Server API,
"User directory"; users.yaml). Storage and matching: ranvier/storage/user_directory.py.

Local users' rows follow their global profile: set at registration and on
every change of display name or avatar (:meth:`on_profile_changed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ranvier.errors import MatrixError
from ranvier.storage.search import search_terms
from ranvier.storage.user_directory import UserDirectoryStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: users.yaml: "Defaults to 10". Capped (Synapse does not; a bound keeps one
#: request's work bounded).
DEFAULT_LIMIT = 10
MAX_LIMIT = 100


class UserDirectoryService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = UserDirectoryStore(hs.database)

    async def on_profile_changed(self, user_id: str) -> None:
        """A local user's row from their profile (registration, profile change)."""
        profile = await self.hs.profiles.get_profile_or_empty(user_id)
        name = profile.get("displayname")
        avatar = profile.get("avatar_url")
        await self.store.set_local_profile(
            user_id,
            name if isinstance(name, str) else None,
            avatar if isinstance(avatar, str) else None,
        )

    async def search(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        term = body.get("search_term")
        if term is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing search_term")
        if not isinstance(term, str):
            raise MatrixError(400, "M_BAD_JSON", "search_term must be a string")
        limit = body.get("limit", DEFAULT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise MatrixError(400, "M_BAD_JSON", "limit must be an integer")
        if limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
        limit = min(limit, MAX_LIMIT)
        terms = search_terms(term)
        if not terms or limit == 0:
            # No word to match (empty, punctuation only): nobody matches.
            return {"limited": False, "results": []}
        found = await self.store.search(
            user_id,
            terms,
            limit + 1,
            all_local=self.hs.config.user_directory.search_all_users,
        )
        results = []
        for entry in found[:limit]:
            result: dict[str, Any] = {"user_id": entry.user_id}
            if entry.display_name is not None:
                result["display_name"] = entry.display_name
            if entry.avatar_url is not None:
                result["avatar_url"] = entry.avatar_url
            results.append(result)
        return {"limited": len(found) > limit, "results": results}
