"""Sync and pagination tokens (Client-Server API, "Syncing"; sync.yaml).

DESIGN.md, "Streams": every kind of change a client syncs has a monotonic
position, and a sync token is the tuple of them.

**Token format** (opaque to clients): ``s<events>_<account_data>_<receipts>_
<presence>_<typing>_<to_device>_<device_lists>``, each a decimal position.
Every position but ``typing`` comes from the database (``stream_positions``),
so tokens stay valid across restarts and across processes sharing a
PostgreSQL database. Typing is in memory and restarts at 0 with the process:
the typing slot holds ``epoch + position`` where ``epoch`` is the wall clock
(ms) when this process started, so a slot from an earlier process (below the
epoch) or one this process never issued (above its position) is read as 0,
"send the current typing lists", and never breaks the sync.

**Pagination tokens** (``prev_batch``, ``/messages`` ``start``/``end``,
``/context``): ``t<position>``, a point in the ``events`` stream *after* the
event at that position: paginating backwards from ``t<N>`` returns events at
or before N, forwards returns events after N. ``/messages`` also accepts a
sync token (its ``events`` slot), as clients pass ``next_batch`` there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ranvier.errors import MatrixError

#: The slots of a sync token, in order.
STREAMS = ("events", "account_data", "receipts", "presence", "typing", "to_device", "device_lists")
#: The slots whose positions the database holds (all but typing).
DB_STREAMS = tuple(name for name in STREAMS if name != "typing")


class InvalidToken(ValueError):
    pass


def _invalid_token(text: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", f"Invalid token {text!r}")


def _position(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidToken(text)
    return int(text)


@dataclass(frozen=True, slots=True)
class SyncToken:
    events: int = 0
    account_data: int = 0
    receipts: int = 0
    presence: int = 0
    typing: int = 0
    to_device: int = 0
    device_lists: int = 0

    def encode(self) -> str:
        return "s" + "_".join(str(getattr(self, name)) for name in STREAMS)

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        """Raises :class:`InvalidToken`."""
        if not text.startswith("s"):
            raise InvalidToken(text)
        parts = text[1:].split("_")
        if len(parts) != len(STREAMS):
            raise InvalidToken(text)
        return cls(*[_position(part) for part in parts])


def pagination_token(position: int) -> str:
    # Negative: within backfilled history (ranvier/storage/events.py).
    return f"t{position}"


def parse_pagination_token(text: str) -> int:
    """The ``events`` position of a pagination token (``t<N>``) or sync token;
    400 ``M_INVALID_PARAM`` otherwise."""
    try:
        if text.startswith("t-"):
            return -_position(text[2:])
        if text.startswith("t"):
            return _position(text[1:])
        return SyncToken.parse(text).events
    except InvalidToken:
        raise _invalid_token(text) from None
