"""Reporting content (Client-Server API, "Reporting Content"): events (the
reporter must be joined to the room, v1.8), rooms (v1.13) and users (v1.14)
reported by local users, stored for the server's administrators and listed
by ``ranvier reports list``.

Not leaking: an event report answers the same 404 whether the event does
not exist, is in another room, is one the reporter may not see, or the
reporter is not joined ("The event was not found or you are not joined to
the room where the event resides"). Room and user reports need no shared
room ("servers MUST NOT restrict room reports based on whether or not the
reporting user is joined"); they are 404 for a room this server does not
know, or a local user that does not exist (the spec's 404s). An ignored
sender's event may be reported ("Clients may wish to ignore users after
reporting them", and the other way round).

Reports are rate limited per reporter (429 ``M_LIMIT_EXCEEDED``, as the spec
lists for room and user reports) at the ``ratelimit.message`` rate, in a
bucket of their own: a report is one write an abusive client could repeat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.core.ids import RoomID, UserID, is_my_user_id
from ranvier.errors import MatrixError
from ranvier.services.visibility import filter_events_for_user
from ranvier.storage.engine import Database
from ranvier.storage.reports import ReportRow, ReportStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: The event-report ``score`` (-100 most offensive … 0), removed in v1.18
#: (MSC4277): stored when a client still sends a valid one, ignored otherwise.
SCORE_RANGE = range(-100, 1)


def _reason(body: dict[str, Any], *, required: bool) -> str | None:
    if "reason" not in body or (body["reason"] is None and not required):
        if required:
            raise MatrixError(400, "M_BAD_JSON", "'reason' is required (it may be blank).")
        return None
    reason = body["reason"]
    if not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "'reason' must be a string.")
    return reason


def _score(body: dict[str, Any]) -> int | None:
    score = body.get("score")
    if isinstance(score, int) and not isinstance(score, bool) and score in SCORE_RANGE:
        return score
    return None


class ReportsService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = ReportStore(hs.database)

    def _ratelimit(self, reporter: str) -> None:
        self.hs.ratelimiter.check("message", f"report {reporter}")

    async def report_event(
        self, reporter: str, room_id: str, event_id: str, body: dict[str, Any]
    ) -> int:
        self._ratelimit(reporter)
        reason = _reason(body, required=False)
        not_found = MatrixError(
            404,
            "M_NOT_FOUND",
            "The event was not found or you are not joined to the room where it is.",
        )
        if not RoomID.is_valid(room_id) or not event_id.startswith("$"):
            raise not_found
        if await self.hs.rooms.get_membership(room_id, reporter) != "join":
            raise not_found
        stored = await self.hs.rooms.events.get_event(event_id)
        if stored is None or stored.room_id != room_id:
            raise not_found
        if not await filter_events_for_user(self.hs, reporter, [stored], include_ignored=True):
            raise not_found
        return await self.store.add(
            received_ts=self.hs.clock_ms(),
            reporter=reporter,
            kind="event",
            room_id=room_id,
            event_id=event_id,
            target_user_id=stored.event.sender,
            reason=reason,
            score=_score(body),
        )

    async def report_room(self, reporter: str, room_id: str, body: dict[str, Any]) -> int:
        self._ratelimit(reporter)
        reason = _reason(body, required=True)
        if not RoomID.is_valid(room_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"{room_id!r} is not a room ID.")
        if not await self.hs.rooms.room_exists(room_id):
            raise MatrixError(404, "M_NOT_FOUND", "The room was not found on this server.")
        return await self.store.add(
            received_ts=self.hs.clock_ms(),
            reporter=reporter,
            kind="room",
            room_id=room_id,
            reason=reason,
        )

    async def report_user(self, reporter: str, user_id: str, body: dict[str, Any]) -> int:
        self._ratelimit(reporter)
        reason = _reason(body, required=True)
        if not UserID.is_valid(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"{user_id!r} is not a user ID.")
        # Other servers' users cannot be checked here: their reports are kept.
        if is_my_user_id(user_id, self.hs.server_name) and not (
            await self.hs.accounts.user_exists(user_id)
        ):
            raise MatrixError(404, "M_NOT_FOUND", "The user was not found on this server.")
        return await self.store.add(
            received_ts=self.hs.clock_ms(),
            reporter=reporter,
            kind="user",
            target_user_id=user_id,
            reason=reason,
        )

    async def list_reports(self, limit: int, before_id: int | None = None) -> list[ReportRow]:
        return await list_reports(self.hs.database, limit, before_id)


async def list_reports(
    database: Database, limit: int, before_id: int | None = None
) -> list[ReportRow]:
    """For administrators (``ranvier reports list``, offline): newest first,
    older than report ``before_id`` when given."""
    return await ReportStore(database).newest(limit, before_id)
