"""Room tags (Client-Server API, "Room Tagging"): the ``m.tag`` room account
data, ``{"tags": {tag: {"order": number, ...}}}``, edited one tag at a time.

The tags endpoints read, change and write back the whole ``m.tag`` entry; a
lock per (user, room) keeps two concurrent tag writes from losing one another
(one process writes a user's account data).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.services.account_data import AccountDataService

TAG_TYPE = "m.tag"
#: "The name of a tag MUST NOT exceed 255 bytes."
MAX_TAG_BYTES = 255


def validate_tag(tag: str, body: dict[str, Any]) -> None:
    """400 for a tag name over 255 bytes (M_INVALID_PARAM) or an ``order``
    that is not a number in [0, 1] (M_BAD_JSON; tags.yaml: "A number in a
    range [0,1]")."""
    if not tag or len(tag.encode()) > MAX_TAG_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "Tag names are 1 to 255 bytes long.")
    if "order" not in body:
        return
    order = body["order"]
    if isinstance(order, bool) or not isinstance(order, (int, float)) or not 0 <= order <= 1:
        raise MatrixError(400, "M_BAD_JSON", "'order' must be a number between 0 and 1.")


class RoomTags:
    def __init__(self, account_data: AccountDataService) -> None:
        self.account_data = account_data
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        """``{tag: {...}}``; empty for a room never tagged."""
        content = await self.account_data.get_account_data(user_id, room_id, TAG_TYPE)
        tags = content.get("tags") if content is not None else None
        return dict(tags) if isinstance(tags, dict) else {}

    async def set_tag(self, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> None:
        validate_tag(tag, body)
        async with self._lock(user_id, room_id):
            tags = await self.get_tags(user_id, room_id)
            tags[tag] = body
            await self._write(user_id, room_id, tags)

    async def delete_tag(self, user_id: str, room_id: str, tag: str) -> None:
        """Removing a tag the room does not have is no error (as Synapse)."""
        async with self._lock(user_id, room_id):
            tags = await self.get_tags(user_id, room_id)
            if tags.pop(tag, None) is None:
                return
            await self._write(user_id, room_id, tags)

    async def _write(self, user_id: str, room_id: str, tags: dict[str, Any]) -> None:
        await self.account_data.set_server_managed(user_id, room_id, TAG_TYPE, {"tags": tags})

    def _lock(self, user_id: str, room_id: str) -> asyncio.Lock:
        key = (user_id, room_id)
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 10_000:  # bounded: drop the idle ones
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock
