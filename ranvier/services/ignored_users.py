"""Ignoring users (Client-Server API, "Ignoring Users"; ``m.ignored_user_list``).

A user's ignore list is the ``ignored_users`` object of their global
``m.ignored_user_list`` account data. The server then leaves out what the
ignored send (its "Server behaviour"):

* their non-state events, wherever events are served to the user: /sync's
  timeline, /messages, /context, /event (the history-visibility filters in
  ``services/visibility.py`` drop them, so every place that filters by
  visibility does). State events still go out — "to ensure parts, such as
  the room name, do not appear different to the user just because they
  ignored the sender";
* invites they send: "Servers must not send room invites from ignored users
  to clients" (:func:`drop_ignored_invites`, used by /sync);
* notifications: an ignored sender's events never notify
  (:meth:`IgnoredUsers.ignorers_of`, for push rule evaluation).

The list is read on every such request, so it is cached per user and the
cache is invalidated by the code that writes the account data. Changing it
takes effect at the next /sync: "the sync API for all clients should
immediately start ignoring (or un-ignoring) the user". Un-ignoring does not
resend what was left out meanwhile ("it should not send events that were
missed while the user was ignored"): an incremental /sync only carries what
is new; a client wanting the rest does a fresh initial sync, as the module
tells clients to.

Helpers for endpoints other tasks add (/relations, /notifications):
:func:`drop_ignored_senders`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.ids import UserID
from ranvier.errors import MatrixError
from ranvier.storage.cache import ReadCache
from ranvier.storage.events import StoredEvent
from ranvier.storage.rooms import Membership

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

IGNORED_USER_LIST = "m.ignored_user_list"
NOBODY: frozenset[str] = frozenset()


def validate_ignored_user_list(user_id: str, content: dict[str, Any]) -> None:
    """A client's ``m.ignored_user_list``, checked against its schema
    (``ignored_users``: required, an object of user ID → object): 400
    ``M_BAD_JSON`` otherwise, so that nothing unreadable is stored. Ignoring
    oneself is 400 ``M_INVALID_PARAM`` (as Synapse and Conduit refuse it)."""
    ignored = content.get("ignored_users")
    if not isinstance(ignored, dict):
        raise MatrixError(400, "M_BAD_JSON", "'ignored_users' must be an object.")
    for other, value in ignored.items():
        if not UserID.is_valid(other):
            raise MatrixError(400, "M_BAD_JSON", f"{other!r} in 'ignored_users' is not a user ID.")
        if not isinstance(value, dict):
            raise MatrixError(400, "M_BAD_JSON", "Each entry of 'ignored_users' is an object.")
    if user_id in ignored:
        raise MatrixError(400, "M_INVALID_PARAM", "You cannot ignore yourself.")


def ignored_set(text: str | None) -> frozenset[str]:
    """The user IDs of stored ``m.ignored_user_list`` JSON (none when absent
    or, for rows written before validation, malformed)."""
    if text is None:
        return NOBODY
    try:
        content = orjson.loads(text)
    except orjson.JSONDecodeError:
        return NOBODY
    ignored = content.get("ignored_users") if isinstance(content, dict) else None
    return frozenset(ignored) if isinstance(ignored, dict) and ignored else NOBODY


class IgnoredUsers:
    """Each user's ignore list, cached (bounded) and invalidated on write; and
    the reverse, who ignores a given sender, for push rule evaluation."""

    def __init__(
        self,
        load: Callable[[str], Awaitable[str | None]],
        load_all: Callable[[], Awaitable[list[tuple[str, str]]]],
        size: int = 10_000,
    ) -> None:
        self._load = load
        self._load_all = load_all
        self._cache: ReadCache[str, frozenset[str]] = ReadCache(size)
        #: ``sender -> the local users ignoring them``, built from every stored
        #: list at first use and dropped whenever a list changes (rare).
        self._ignorers: dict[str, frozenset[str]] | None = None
        self._generation = 0

    async def of(self, user_id: str) -> frozenset[str]:
        async def load() -> frozenset[str]:
            return ignored_set(await self._load(user_id))

        return await self._cache.get(user_id, load)

    async def ignorers_of(self, sender: str) -> frozenset[str]:
        """The users who ignore ``sender``: their events never notify them (push
        rule evaluation leaves them out). One lookup per event, however many
        members the room has."""
        index = self._ignorers
        if index is None:
            generation = self._generation
            building: dict[str, set[str]] = {}
            for user_id, text in await self._load_all():
                for ignored in ignored_set(text):
                    building.setdefault(ignored, set()).add(user_id)
            index = {ignored: frozenset(users) for ignored, users in building.items()}
            if generation == self._generation:  # else a list changed while it loaded
                self._ignorers = index
        return index.get(sender, NOBODY)

    def invalidate(self, user_id: str) -> None:
        self._cache.invalidate([user_id])
        self._ignorers = None
        self._generation += 1

    def clear(self) -> None:
        self._cache.clear()
        self._ignorers = None
        self._generation += 1


async def drop_ignored_senders(
    hs: Homeserver, user_id: str, events: Sequence[StoredEvent]
) -> list[StoredEvent]:
    """``events`` without the non-state events of senders ``user_id`` ignores."""
    ignored = await hs.account_data.ignored_users(user_id)
    if not ignored:
        return list(events)
    return [e for e in events if e.event.state_key is not None or e.event.sender not in ignored]


async def drop_ignored_invites(
    hs: Homeserver, user_id: str, invites: list[Membership]
) -> list[Membership]:
    """``invites`` of ``user_id`` without those sent by users they ignore."""
    ignored = await hs.account_data.ignored_users(user_id)
    if not ignored or not invites:
        return invites
    events = await hs.rooms.events.get_events([m.event_id for m in invites])
    return [
        m
        for m in invites
        if (invite := events.get(m.event_id)) is None or invite.event.sender not in ignored
    ]
