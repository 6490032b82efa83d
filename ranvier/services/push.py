"""Push rule evaluation, notification counts and GET /notifications.

Client-Server API, "Push Notifications" (push rules decide, for each local
member of a room, whether an event notifies or highlights), "Receipts"
("Threaded read receipts": what resets the counts) and the /notifications
endpoint.

Every event a local user receives (sent here or received over federation)
reaches :meth:`PushService.on_event` after it is durable (one hook, in
``RoomsService._notify``). The evaluation runs off the sender's request
path, in one background worker per process that takes the queued events in
batches. A /sync's counts must include every event its timeline shows, so:

- the room's members are woken (the notifier) once the event is evaluated,
  not when it is persisted, and a long-poll sees the events stream only up to
  the first event still being evaluated (:meth:`visible_position`): it never
  waits for the worker, it is woken when there is something to show;
- any other /sync (``timeout=0``, initial) sees every committed event, and
  waits for the pending evaluations of the rooms and positions it shows
  (:meth:`wait_for_positions`) before it reads the counts: a client that sent
  an event sees it in its next /sync.

Under load this matters: a woken /sync that then waited for the worker held
its reads while the worker's queued behind the /syncs' (one reader pool, one
GIL): a convoy (docs/performance.md, scenario 14).

Per event the room is read
once (members, power levels); per user the rules come from a cache
invalidated by push-rule changes, and users without rules of their own share
one evaluation (``core.push_rules.evaluate_for_users``).

Counts are derived from the stored actions and the user's receipts when
asked (``storage/push_actions.py``): correct after a restart. Evaluations
still queued at a crash are not lost: each batch records how far evaluation
got, with its rows, and the next start evaluates the events after that again
(:meth:`PushService.start`; counted once, not pushed twice).
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.auth_rules import CREATE_KEY, POWER_LEVELS_KEY, user_power_level
from ranvier.core.events import Event, StateKey
from ranvier.core.ids import is_mine
from ranvier.core.push_rules import (
    EvaluationContext,
    UserRules,
    evaluate_for_users,
    interpret_actions,
    prepare_user_rules,
)
from ranvier.errors import MatrixError
from ranvier.services.client_events import serialize_events
from ranvier.storage.push_actions import (
    MAIN_THREAD,
    MembersAction,
    PushActionRow,
    PushActionStore,
)

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

MEMBER = "m.room.member"
#: Rulesets kept in memory (oldest out first); a miss costs two small queries.
MAX_CACHED_RULESETS = 50_000
#: A group of users with the same actions this large is written with one
#: INSERT ... SELECT over the room's members, leaving out at most this many others.
BULK_MIN_USERS = 20
BULK_MAX_EXCLUDED = 500
#: Users per "who has rules of their own" query (bound parameters stay few).
RULES_QUERY_CHUNK = 500
#: After a crash, the events evaluated again at start: from this many stream
#: positions before the recorded one (batches finish slightly out of order),
#: at most this many events.
RECOVERY_MARGIN = 1_000
RECOVERY_LIMIT = 10_000
#: GET /notifications: default and largest page.
DEFAULT_NOTIFICATIONS_LIMIT = 20
MAX_NOTIFICATIONS_LIMIT = 100


@dataclass(slots=True)
class _Queued:
    """An event waiting for evaluation: its stream position (None: unknown)
    and who to wake once it is evaluated (None: nobody)."""

    seq: int
    event: Event
    position: int | None
    wake: set[str] | None


@dataclass(slots=True)
class _Group:
    """Users for whom an event has the same actions."""

    actions: list[Any] | None
    users: list[str]


def thread_of(event: Event) -> str:
    """The thread an event belongs to for counts and receipts ("Threading"):
    the root of an ``m.thread`` relation, else ``main``."""
    relates_to = event.content.get("m.relates_to")
    if isinstance(relates_to, Mapping) and relates_to.get("rel_type") == "m.thread":
        root = relates_to.get("event_id")
        if isinstance(root, str) and root and "\x00" not in root:
            return root
    return MAIN_THREAD


def _relations(event: Event) -> dict[str, str]:
    """``{rel_type: event_id}`` of the event's relations, ``m.in_reply_to`` included."""
    relates_to = event.content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return {}
    found: dict[str, str] = {}
    rel_type, target = relates_to.get("rel_type"), relates_to.get("event_id")
    if isinstance(rel_type, str) and isinstance(target, str):
        found[rel_type] = target
    reply = relates_to.get("m.in_reply_to")
    if isinstance(reply, Mapping) and isinstance(reply.get("event_id"), str):
        found["m.in_reply_to"] = reply["event_id"]
    return found


class PushService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = PushActionStore(hs.database)
        receipts = getattr(hs, "receipts", None)
        if receipts is not None:
            receipts.store.on_receipt.append(self.store.forget_reads)
        self._rules: OrderedDict[str, UserRules] = OrderedDict()
        #: Bumped by every invalidation: rules loaded across one are not cached.
        self._rules_epoch = 0
        #: The users with rules of their own or a changed default (loaded at
        #: first use, dropped by every change): usually few.
        self._customised: frozenset[str] | None = None
        self._queue: deque[_Queued] = deque()
        #: Events are numbered as queued and evaluated in that order: all up to
        #: ``_done_seq`` are finished. ``_room_pending``: each room's unfinished
        #: events, (number, stream position, sender), oldest first.
        self._seq = 0
        self._done_seq = 0
        #: All up to this number are also handed to the pushers.
        self._handed_seq = 0
        self._room_pending: dict[str, deque[tuple[int, int, str]]] = {}
        #: Stream positions of the unfinished events (a heap; finished ones
        #: leave it lazily through ``_finished_positions``).
        self._unfinished: list[int] = []
        self._finished_positions: Counter[int] = Counter()
        #: The same positions, exactly: who sent the event there, and how many
        #: queued events have that position (one; more only if an event is
        #: queued twice). For :meth:`visible_position`'s per-user view.
        self._unfinished_senders: dict[int, tuple[str, int]] = {}
        self._progress = asyncio.Condition()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        #: Events evaluated again after a crash: counted, never pushed again.
        self._recovered: set[str] = set()

    async def start(self) -> None:
        """Evaluate again what a crash may have left unevaluated: the events
        after the last recorded position (less a margin), up to a bound. Their
        rows are written where missing; nothing is pushed for them."""
        recorded = await self.store.evaluated()
        if recorded is None:  # a new database: nothing is owed
            await self.store.set_evaluated(await self.hs.rooms.events.current_position())
            return
        position, clean = recorded
        if clean:
            return
        event_ids = await self.store.event_ids_after(
            max(position - RECOVERY_MARGIN, 0), RECOVERY_LIMIT
        )
        stored = await self.hs.rooms.events.get_events(event_ids)
        for event_id in event_ids:
            item = stored.get(event_id)
            if item is not None:
                self._recovered.add(event_id)
                self.on_event(item.event, item.stream_ordering)
        logger.info("Push rules: evaluating %d events again after an unclean stop", len(stored))

    # --- the hook --------------------------------------------------------------------

    def on_event(self, event: Event, position: int | None, wake: set[str] | None = None) -> bool:
        """A durable event that local users may be notified of, at stream
        ``position``: evaluate it soon, then wake ``wake`` (the users whose
        /sync shows it) and the room's peekers. False when closed: the caller
        wakes them itself."""
        if self._closed:
            return False
        self._seq += 1
        self._queue.append(_Queued(self._seq, event, position, wake))
        # Unknown positions (never expected) are waited for, not hidden.
        pending_position = position if position is not None else 0
        self._room_pending.setdefault(event.room_id, deque()).append(
            (self._seq, pending_position, event.sender)
        )
        if position is not None:
            heapq.heappush(self._unfinished, position)
            sender, count = self._unfinished_senders.get(position, (event.sender, 0))
            self._unfinished_senders[position] = (sender, count + 1)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        if wake is not None and event.sender in wake:
            # Their own event is visible to them at once (visible_position).
            self.hs.notifier.notify_users((event.sender,))
        return True

    def visible_position(self, position: int, user_id: str | None = None) -> int:
        """The events stream position a long-poll may show: ``position``, or
        just before the first event still being evaluated (its members are
        woken when it is done).

        With ``user_id``, that user's own events are not waited for: push rules
        never notify a user of an event they sent ("MUST NOT notify ... events
        the user has sent"; :meth:`_evaluate`), so their counts do not depend
        on those evaluations. The sender's /sync right after a send shows the
        event at once instead of waiting for the other members' evaluation."""
        heap, finished = self._unfinished, self._finished_positions
        while heap:
            top = heap[0]
            count = finished.get(top, 0)
            if not count:
                break
            heapq.heappop(heap)
            if count == 1:
                del finished[top]
            else:
                finished[top] = count - 1
        if not heap or heap[0] > position:
            return position
        first = heap[0]
        senders = self._unfinished_senders
        if user_id is None or senders.get(first, ("", 0))[0] != user_id:
            return first - 1
        for at in sorted(senders):  # the first unfinished events are the user's own
            if at > position:
                break
            if senders[at][0] != user_id:
                return at - 1
        return position

    async def wait_for_positions(
        self, room_ids: Iterable[str], position: int, user_id: str | None = None
    ) -> None:
        """Return once the events of these rooms at or before ``position``
        queued so far are evaluated (not later ones: a busy room cannot hold
        a /sync back for ever), except ``user_id``'s own (see
        :meth:`visible_position`)."""
        if not self._room_pending:
            return  # the common case: nothing queued
        target = 0
        for room_id in room_ids:
            for seq, at, sender in self._room_pending.get(room_id, ()):
                if at <= position and seq > target and sender != user_id:
                    target = seq
        await self._wait_for(target)

    async def wait_for_rooms(self, room_ids: Iterable[str]) -> None:
        """Return once the events of these rooms queued so far are evaluated."""
        if not self._room_pending:
            return
        target = max(
            (
                self._room_pending[room_id][-1][0]
                for room_id in room_ids
                if room_id in self._room_pending
            ),
            default=0,
        )
        await self._wait_for(target)

    async def wait_idle(self) -> None:
        """Return once every event queued so far is evaluated and its
        notifications are handed to the pushers (tests, shutdown)."""
        target = self._seq
        if self._handed_seq >= target:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._handed_seq >= target)

    async def _wait_for(self, target: int) -> None:
        if self._done_seq >= target:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._done_seq >= target)

    def invalidate_rules(self, user_id: str) -> None:
        """The user's push rules changed (PushRulesService, after the commit)."""
        self._rules.pop(user_id, None)
        self._customised = None
        self._rules_epoch += 1

    async def close(self) -> None:
        """Finish the queued evaluations (their counts must survive a restart)
        and record that nothing is owed."""
        if self._worker is not None:
            await asyncio.shield(self._worker)
        if not self._closed:
            self._closed = True
            try:
                position = await self.hs.rooms.events.current_position()
                await self.store.set_evaluated(position, clean=True)
            except Exception:  # the next start evaluates the tail again: harmless
                logger.exception("Could not record where push evaluation stopped")

    # --- the worker --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                notified: list[tuple[str, PushActionRow, Event]] = []
                try:
                    notified = await self._evaluate_batch([queued.event for queued in batch])
                except Exception:
                    logger.exception("Push rule evaluation failed for %d events", len(batch))
                finally:
                    await self._done(batch)
                try:
                    await self._hand_to_pushers(notified)
                except Exception:
                    logger.exception("Handing %d notifications to pushers failed", len(notified))
                finally:
                    self._handed_seq = batch[-1].seq
                    async with self._progress:
                        self._progress.notify_all()
        finally:
            self._worker = None

    async def _done(self, batch: list[_Queued]) -> None:
        """The batch is evaluated (or failed): its events become visible to
        long-polls, their members are woken, waiting /syncs go on."""
        self._done_seq = batch[-1].seq
        rooms: set[str] = set()
        users: set[str] = set()
        for queued in batch:
            room_id = queued.event.room_id
            pending = self._room_pending.get(room_id)
            while pending and pending[0][0] <= queued.seq:
                pending.popleft()
            if pending is not None and not pending:
                del self._room_pending[room_id]
            if queued.position is not None:
                self._finished_positions[queued.position] += 1
                sender, count = self._unfinished_senders.pop(queued.position, ("", 1))
                if count > 1:
                    self._unfinished_senders[queued.position] = (sender, count - 1)
            if queued.wake is not None:
                users |= queued.wake
                rooms.add(room_id)
        notifier = self.hs.notifier
        notifier.notify_users(users)
        for room_id in rooms:
            notifier.notify_room(room_id)
        async with self._progress:
            self._progress.notify_all()

    async def _evaluate_batch(self, batch: list[Event]) -> list[tuple[str, PushActionRow, Event]]:
        """Evaluate and store the batch's actions; the notifications for pushers."""
        stored = await self.hs.rooms.events.get_events([event.event_id for event in batch])
        rows: list[PushActionRow] = []
        bulks: list[MembersAction] = []
        notified: list[tuple[str, PushActionRow, Event]] = []
        now = self.hs.clock_ms()
        newest = 0
        repeated = False  # rows written before a crash may be there already
        for event in batch:
            item = stored.get(event.event_id)
            if item is None or item.rejected or item.outlier or item.soft_failed:
                continue
            if item.stream_ordering <= 0:
                continue  # backfilled history notifies nobody
            newest = max(newest, item.stream_ordering)
            recovered = event.event_id in self._recovered
            repeated = repeated or recovered
            self._recovered.discard(event.event_id)
            groups = await self._evaluate(event, item.stream_ordering)
            largest = max(groups, key=lambda group: len(group.users), default=None)
            for group in groups:
                outcome = interpret_actions(group.actions)
                if not outcome.notify:
                    continue
                row = PushActionRow(
                    user_id="",
                    event_id=event.event_id,
                    room_id=event.room_id,
                    stream_ordering=item.stream_ordering,
                    thread_id=thread_of(event),
                    highlight=outcome.highlight,
                    actions=orjson.dumps(group.actions).decode(),
                    ts=now,
                )
                others = [user for other in groups if other is not group for user in other.users]
                if (
                    group is largest
                    and len(group.users) >= BULK_MIN_USERS
                    and len(others) < BULK_MAX_EXCLUDED
                    # The SELECT finds joined members only, not an invitee.
                    and not (event.type == MEMBER and event.state_key in group.users)
                ):
                    # One INSERT ... SELECT over the room's members instead of a
                    # row per user through Python: the cost of a large room.
                    bulks.append(MembersAction(row, [event.sender, *others], group.users))
                else:
                    rows.extend(replace(row, user_id=user) for user in group.users)
                if not recovered:
                    notified.extend((user, row, event) for user in group.users)
        # The position goes with the rows (no write of its own for a batch
        # that notified no one: a crash then re-evaluates a little more).
        await self.store.add(
            rows, bulks, evaluated=newest if rows or bulks else None, new=not repeated
        )
        return notified

    async def _evaluate(self, event: Event, position: int) -> list[_Group]:
        """The local users who receive ``event`` (never its sender), grouped by
        their actions: members joined before it, and a local invitee."""
        server_name = self.hs.server_name
        invitee = event.state_key
        if not (
            event.type == MEMBER
            and event.content.get("membership") == "invite"
            and isinstance(invitee, str)
            and is_mine(invitee, server_name)
        ):
            invitee = None
        if event.type == MEMBER and not await self._rules_may_notify_members(
            event.room_id, invitee
        ):
            # Only rules of their own could notify the members of a member event
            # (the default .m.rule.member_event is dont_notify): the room's
            # members need no walk, only an invitee (.m.rule.invite_for_me).
            users = {invitee} if invitee else set()
            member_count = len(await self.hs.rooms.store.joined_members(event.room_id))
        else:
            joined = await self.store.members_before(event.room_id, position)
            # is_mine, cheaper for a room's worth of IDs: a localpart holds no
            # ':' (Appendices, "User Identifiers"): the server name follows it.
            suffix = ":" + server_name
            users = {user for user in joined if user.endswith(suffix)}
            if invitee:
                users.add(invitee)  # not joined yet; .m.rule.invite_for_me is for them
            member_count = len(joined)
        users.discard(event.sender)  # "MUST NOT notify ... events the user has sent"
        # "Ignoring Users": events from an ignored user never notify.
        users -= await self.hs.account_data.ignored.ignorers_of(event.sender)
        if not users:
            return []
        rules = await self._rules_of(users)
        context = await self._context(event, member_count)
        display_names: dict[str, str] = {}
        wanting_names = [user for user, prepared in rules.items() if prepared.uses_display_name]
        if wanting_names:
            display_names = await self._display_names(event.room_id, wanting_names)
        results = evaluate_for_users(rules, event.pdu, context, display_names)
        # Users who shared an evaluation share its list of actions (one object).
        groups: dict[int, _Group] = {}
        for user_id, actions in results.items():
            group = groups.get(id(actions))
            if group is None:
                group = groups[id(actions)] = _Group(actions, [])
            group.users.append(user_id)
        return list(groups.values())

    async def _rules_may_notify_members(self, room_id: str, invitee: str | None) -> bool:
        """Whether a member of ``room_id`` (or the invitee) has push rules of
        their own or changed a default: with the defaults alone, no member event
        notifies a member (Client-Server API, "Push Rules": ``.m.rule.member_event``
        comes before every rule that could match one, and only the invitee's
        ``.m.rule.invite_for_me`` precedes it)."""
        customised = self._customised
        if customised is None:
            epoch = self._rules_epoch
            customised = await self.hs.push_rules.store.all_users_with_rules()
            if epoch == self._rules_epoch:  # else a change raced the load
                self._customised = customised
        if not customised:
            return False
        if invitee in customised:
            return True
        members = await self.hs.rooms.store.joined_members(room_id)
        if len(customised) < len(members):
            return any(user in members for user in customised)
        return any(user in customised for user in members)

    async def _context(self, event: Event, member_count: int) -> EvaluationContext:
        state = await self._state_events(event.room_id, [CREATE_KEY, POWER_LEVELS_KEY])
        power_levels = state.get(POWER_LEVELS_KEY)
        notifications = power_levels.content.get("notifications") if power_levels else None
        levels = {
            key: value
            for key, value in (notifications.items() if isinstance(notifications, dict) else ())
            if isinstance(value, int) and not isinstance(value, bool)
        }
        related, fallbacks = await self._related(event)
        return EvaluationContext(
            room_member_count=member_count,
            sender_power_level=int(min(user_power_level(state, event.sender), 2**53)),
            notification_power_levels=levels,
            related_events=related,
            fallback_relations=fallbacks,
        )

    async def _related(self, event: Event) -> tuple[dict[str, Mapping[str, Any]], frozenset[str]]:
        """MSC3664: the events ``event`` relates to, in the same room."""
        relations = _relations(event)
        if not relations:
            return {}, frozenset()
        found = await self.hs.rooms.events.get_events(relations.values())
        related = {
            rel_type: found[target].event.pdu
            for rel_type, target in relations.items()
            if target in found and found[target].room_id == event.room_id
        }
        relates_to = event.content.get("m.relates_to")
        falling_back = isinstance(relates_to, Mapping) and relates_to.get("is_falling_back") is True
        return related, frozenset({"m.in_reply_to"} if falling_back else ())

    async def _state_events(self, room_id: str, keys: list[StateKey]) -> dict[StateKey, Event]:
        ids = await self.hs.rooms.events.current_state_ids(room_id, keys)
        found = await self.hs.rooms.events.get_events(ids.values())
        return {key: found[event_id].event for key, event_id in ids.items() if event_id in found}

    async def _display_names(self, room_id: str, user_ids: list[str]) -> dict[str, str]:
        members = await self._state_events(room_id, [(MEMBER, user) for user in user_ids])
        names: dict[str, str] = {}
        for (_, user_id), member in members.items():
            name = member.content.get("displayname")
            if isinstance(name, str) and name:
                names[user_id] = name
        return names

    async def _rules_of(self, user_ids: Collection[str]) -> dict[str, UserRules]:
        # Oldest-first eviction: cheaper than an LRU's bookkeeping for a room's
        # worth of users on every event.
        cached = self._rules
        result = {user: cached[user] for user in user_ids if user in cached}
        missing = [user for user in user_ids if user not in result]
        epoch = self._rules_epoch
        if missing:
            customised: set[str] = set()
            for start in range(0, len(missing), RULES_QUERY_CHUNK):
                chunk = missing[start : start + RULES_QUERY_CHUNK]
                customised |= await self.hs.push_rules.store.users_with_rules(chunk)
            for user_id in missing:
                if user_id in customised:
                    result[user_id] = await self._load_rules(user_id)
                else:
                    result[user_id] = prepare_user_rules(user_id, ())
            if epoch == self._rules_epoch:  # else a change may have raced the load
                for user_id in missing:
                    self._cache(user_id, result[user_id])
        return result

    async def _load_rules(self, user_id: str) -> UserRules:
        store, db = self.hs.push_rules.store, self.hs.database
        own = await store.user_rules(db, user_id)
        overrides = await store.default_overrides(db, user_id)
        return prepare_user_rules(user_id, own, overrides)

    def _cache(self, user_id: str, rules: UserRules) -> None:
        self._rules[user_id] = rules
        while len(self._rules) > MAX_CACHED_RULESETS:
            self._rules.popitem(last=False)

    async def _hand_to_pushers(self, notified: list[tuple[str, PushActionRow, Event]]) -> None:
        """The pushers task's interface: one call per notified user and event."""
        pushers = getattr(self.hs, "pushers", None)
        if pushers is None or not notified:
            return
        # Only users with a pusher: their badge below costs a count over all
        # their rooms, which a room of 1,000 members must not pay per message.
        wanting = await pushers.users_with_pushers({user_id for user_id, _, _ in notified})
        notified = [item for item in notified if item[0] in wanting]
        # The badge of each push is the count as of its event: the count after
        # the batch, less the user's notifications later in the batch.
        later: dict[str, int] = {}
        for user_id, _, _ in notified:
            later[user_id] = later.get(user_id, 0) + 1
        unread: dict[str, int] = {}
        for user_id, row, event in notified:
            if user_id not in unread:
                unread[user_id] = await self.total_unread(user_id)
            later[user_id] -= 1
            try:
                result = pushers.on_notification(
                    user_id=user_id,
                    room_id=row.room_id,
                    event=event,
                    actions=orjson.loads(row.actions),
                    counts={"unread": unread[user_id] - later[user_id]},
                )
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("Pushers failed for %s on %s", user_id, row.event_id)

    # --- counts ------------------------------------------------------------------------

    async def unread_counts(
        self, user_id: str, room_ids: Collection[str]
    ) -> dict[str, dict[str, tuple[int, int]]]:
        """``{room_id: {thread_id: (notification_count, highlight_count)}}`` of
        these rooms, non-zero only."""
        counts: dict[str, dict[str, tuple[int, int]]] = {}
        for row in await self.store.unread_counts(user_id, room_ids):
            counts.setdefault(row.room_id, {})[row.thread_id] = (row.notifications, row.highlights)
        return counts

    async def sync_counts(
        self, user_id: str, room_ids: Collection[str], position: int, *, by_thread: bool
    ) -> dict[str, dict[str, Any]]:
        """The ``unread_notifications`` (and with ``by_thread``, the
        ``unread_thread_notifications``) of each joined room for /sync, after
        the rooms' pending evaluations up to ``position`` (the /sync's events
        position). With ``by_thread`` the room's counts are the main
        timeline's only ("Receipts", "Threaded read receipts")."""
        await self.wait_for_positions(room_ids, position, user_id)
        counts = await self.unread_counts(user_id, room_ids)
        result: dict[str, dict[str, Any]] = {}
        for room_id in room_ids:
            threads = counts.get(room_id, {})
            if by_thread:
                main = threads.get(MAIN_THREAD, (0, 0))
                fields: dict[str, Any] = {
                    "unread_notifications": _counts_json(*main),
                    "unread_thread_notifications": {
                        thread: _counts_json(*pair)
                        for thread, pair in threads.items()
                        if thread != MAIN_THREAD
                    },
                }
            else:
                fields = {
                    "unread_notifications": _counts_json(
                        sum(n for n, _ in threads.values()), sum(h for _, h in threads.values())
                    )
                }
            result[room_id] = fields
        return result

    async def total_unread(self, user_id: str) -> int:
        """Unread notifications across the user's joined rooms (a push's badge)."""
        joined = await self.hs.rooms.joined_room_ids(user_id)
        counts = await self.unread_counts(user_id, joined)
        return sum(count for threads in counts.values() for count, _ in threads.values())

    # --- GET /notifications ------------------------------------------------------------

    async def notifications(
        self, user_id: str, from_token: str | None, limit: str | None, only: str | None
    ) -> dict[str, Any]:
        """getNotifications: newest first; ``next_token`` pages to older ones."""
        before = _parse_from(from_token)
        page_size = _parse_limit(limit)
        # "only": "Supply highlight to return only events where the notification
        # had the highlight tweak set" (other values filter nothing, as Synapse).
        only_highlight = only is not None and "highlight" in only
        # Invites notify too (.m.rule.invite_for_me): wait for those rooms as well.
        rooms = await self.hs.rooms.store.rooms_for_user(user_id, ("join", "invite"))
        await self.wait_for_rooms(room.room_id for room in rooms)
        rows = await self.store.page(user_id, before, page_size, only_highlight)
        if not rows:
            return {"notifications": []}
        stored = await self.hs.rooms.events.get_events([row.event_id for row in rows])
        # Rows written before the user ignored their sender stay out too.
        ignored = await self.hs.account_data.ignored_users(user_id)
        shown = [
            row
            for row in rows
            if row.event_id in stored and stored[row.event_id].event.sender not in ignored
        ]
        formatted = await serialize_events(
            self.hs,
            [stored[row.event_id] for row in shown],
            user_id=user_id,
            device_id=None,
            include_room_id=False,  # notifications.yaml: ClientEventWithoutRoomID
        )
        reads = await self.store.read_positions(user_id)
        entries = [
            {
                "actions": orjson.loads(row.actions),
                "event": event,
                "read": _is_read(row, reads),
                "room_id": row.room_id,
                "ts": row.ts,
            }
            for row, event in zip(shown, formatted, strict=True)
        ]
        # profile_tag is left out: no pusher here sets one (the schema has no null).
        response: dict[str, Any] = {"notifications": entries}
        if len(rows) == page_size:
            response["next_token"] = str(rows[-1].stream_ordering)
        return response


def _counts_json(notifications: int, highlights: int) -> dict[str, int]:
    return {"notification_count": notifications, "highlight_count": highlights}


def rooms_with_own_receipts(user_id: str, receipts: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Rooms of a /sync's receipts (``ReceiptService.changes_for_user``) where
    ``user_id``'s own receipt moved: their counts changed, so an incremental
    sync must include them."""
    rooms: set[str] = set()
    for room_id, event in receipts.items():
        for by_type in event.get("content", {}).values():
            if any(user_id in readers for readers in by_type.values()):
                rooms.add(room_id)
                break
    return rooms


def _is_read(row: PushActionRow, reads: Mapping[tuple[str, str], int]) -> bool:
    position = max(reads.get((row.room_id, ""), 0), reads.get((row.room_id, row.thread_id), 0))
    return row.stream_ordering <= position


def _parse_from(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", "'from' is not a token of this endpoint")
    return int(value)


def _parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_NOTIFICATIONS_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "'limit' must be an integer") from None
    if limit < 1:
        raise MatrixError(400, "M_INVALID_PARAM", "'limit' must be positive")
    return min(limit, MAX_NOTIFICATIONS_LIMIT)
