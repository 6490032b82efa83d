"""Account data, global and per room (Client-Server API, "Client Config").

Writes take a position of the ``account_data`` stream and wake the owner's
/sync. For /sync this service is the ``account_data`` stream provider:
:meth:`current_position` and :meth:`changes_for_user`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.errors import MatrixError
from ranvier.services.ignored_users import (
    IGNORED_USER_LIST,
    IgnoredUsers,
    validate_ignored_user_list,
)
from ranvier.services.room_tags import RoomTags
from ranvier.storage.account_data import STREAM, AccountDataStore
from ranvier.storage.engine import Transaction, current_stream_position

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: "Client Config", Server Behaviour: types the server manages; clients setting
#: them get 405 M_BAD_JSON, for global and room account data alike.
PUSH_RULES = "m.push_rules"
SERVER_MANAGED_TYPES = frozenset({"m.fully_read", PUSH_RULES})


@dataclass(slots=True)
class AccountDataChanges:
    """What /sync lists: ``account_data.events`` at the top level (``global_events``)
    and ``rooms.join.<room>.account_data.events`` (``room_events``)."""

    global_events: list[dict[str, Any]] = field(default_factory=list)
    room_events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class AccountDataService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = AccountDataStore(hs.database)
        self.tags = RoomTags(self)  # m.tag, edited by the tags endpoints
        # m.ignored_user_list, read on every /sync, /messages ...: cached.
        self.ignored = IgnoredUsers(
            lambda user_id: self.store.get(user_id, None, IGNORED_USER_LIST),
            lambda: self.store.all_global(IGNORED_USER_LIST),
        )
        hs.database.on_positions_reset(self.ignored.clear)

    async def set_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any]
    ) -> int:
        """A client's write; 405 ``M_BAD_JSON`` for a server-managed type."""
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API.")
        if room_id is None and data_type == IGNORED_USER_LIST:
            validate_ignored_user_list(user_id, content)
        return await self.set_server_managed(user_id, room_id, data_type, content)

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """Whom ``user_id`` ignores ("Ignoring Users"); cached, see
        ``services/ignored_users.py`` for what the server leaves out."""
        return await self.ignored.of(user_id)

    async def set_server_managed(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any]
    ) -> int:
        """Any write, server-managed types included (read markers, push rules)."""
        async with self.hs.database.transaction() as txn:
            position = await self.set_in_transaction(txn, user_id, room_id, data_type, content)
        self.hs.notifier.notify_users([user_id])
        return position

    async def set_in_transaction(
        self,
        txn: Transaction,
        user_id: str,
        room_id: str | None,
        data_type: str,
        content: dict[str, Any],
    ) -> int:
        """Write inside the caller's transaction; the caller notifies after commit."""
        if room_id is None and data_type == IGNORED_USER_LIST:
            txn.call_after_commit(lambda: self.ignored.invalidate(user_id))
        return await self.store.put_in_transaction(txn, user_id, room_id, data_type, _dump(content))

    async def get_account_data(
        self, user_id: str, room_id: str | None, data_type: str
    ) -> dict[str, Any] | None:
        text = await self.store.get(user_id, room_id, data_type)
        if text is None:
            if room_id is None and data_type == PUSH_RULES:
                # Users who never changed a rule have no row; "Servers must allow
                # clients to read the above event types as normal".
                return await self.hs.push_rules.account_data_content(user_id)
            return None
        value: dict[str, Any] = orjson.loads(text)
        return value

    # --- /sync provider ------------------------------------------------------------

    async def current_position(self) -> int:
        """The ``account_data`` stream's current position."""
        return await current_stream_position(self.hs.database, STREAM)

    async def changes_for_user(
        self,
        user_id: str,
        from_pos: int,
        to_pos: int,
        room_ids: Collection[str] | None = None,
        *,
        initial: bool | None = None,
    ) -> AccountDataChanges:
        """Account data of ``user_id`` written in (from_pos, to_pos] (``from_pos`` 0:
        all of it, plus ``m.push_rules`` even when never written), as
        ``{"type", "content"}`` events. Room entries are kept only
        for ``room_ids`` when given. Each type appears once, with its latest content.
        """
        changes = AccountDataChanges()
        allowed = None if room_ids is None else set(room_ids)
        # (from_pos, to_pos] empty: nothing to read (most incremental syncs).
        rows = await self.store.changed_between(user_id, from_pos, to_pos) if from_pos < to_pos else []
        for row in rows:
            event = {"type": row.data_type, "content": orjson.loads(row.content)}
            if row.room_id is None:
                changes.global_events.append(event)
            elif allowed is None or row.room_id in allowed:
                changes.room_events.setdefault(row.room_id, []).append(event)
        if initial is None:
            initial = from_pos == 0  # an incremental sync may also start at 0: it passes False
        if initial and not any(e["type"] == PUSH_RULES for e in changes.global_events):
            # An initial sync always carries the push rules (defaults included).
            content = await self.hs.push_rules.account_data_content(user_id)
            changes.global_events.append({"type": PUSH_RULES, "content": content})
        return changes


def _dump(content: dict[str, Any]) -> str:
    return orjson.dumps(content).decode()
