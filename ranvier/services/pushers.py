"""Pushers: which push gateways to tell about a user's notifications.

Client-Server API, "Push Notifications": ``POST /pushers/set`` creates,
updates (same user, ``app_id`` and ``pushkey``) or deletes (``kind: null``) a
pusher; ``GET /pushers`` lists them. Only ``http`` pushers exist here (the
spec's ``email`` kind is optional and answers 400).

A pusher belongs to the device whose access token set it: logging that device
out or deleting it deletes the pusher (Synapse ties pushers to access tokens
the same way), so a phone that logged out stops ringing.

:meth:`PusherService.on_notification` is what push rule evaluation calls for
each (user, event) that notifies. It only queues: one dispatcher task reads the
user's pushers and the room's name, then hands one request per pusher to
:class:`~ranvier.services.push_delivery.PushDelivery`, whose per-pusher
workers talk to the gateways. A send or a /sync never waits for any of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ranvier.core.push_rules import interpret_actions
from ranvier.services.push_delivery import PushDelivery, PusherKey, PushRequest
from ranvier.services.pusher_params import PusherParams, parse_pusher_body
from ranvier.services.requester import Requester
from ranvier.storage.pushers import Pusher, PushersStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

EVENT_ID_ONLY = "event_id_only"
_NAME = ("m.room.name", "")
_CANONICAL_ALIAS = ("m.room.canonical_alias", "")
_MEMBER = "m.room.member"


@dataclass(frozen=True, slots=True)
class EventFields:
    """What /notify says about an event, from a StoredEvent, Event or client dict."""

    event_id: str
    room_id: str
    type: str
    sender: str
    state_key: str | None
    content: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Pending:
    user_id: str
    event: EventFields
    actions: Sequence[Any]
    counts: Mapping[str, Any]


def event_fields(event: Any, room_id: str) -> EventFields | None:
    """Accept a ``StoredEvent`` (``.event``), a core ``Event`` or a client-format dict."""
    inner = getattr(event, "event", event)
    if isinstance(inner, Mapping):
        get = inner.get
    else:

        def get(name: str, default: Any = None) -> Any:
            return getattr(inner, name, default)

    event_id, event_type, sender = get("event_id"), get("type"), get("sender")
    if not (isinstance(event_id, str) and isinstance(event_type, str) and isinstance(sender, str)):
        return None
    # A StoredEvent redacted by now keeps its original content: never push that.
    content = None if getattr(event, "redacted_by", None) else get("content")
    state_key = get("state_key")
    return EventFields(
        event_id=event_id,
        room_id=get("room_id") or room_id,
        type=event_type,
        sender=sender,
        state_key=state_key if isinstance(state_key, str) else None,
        content=content if isinstance(content, Mapping) else {},
    )


def push_counts(counts: Mapping[str, Any]) -> dict[str, int]:
    """``unread`` and ``missed_calls``; "Counts whose value is zero should be omitted"."""
    return {
        name: value
        for name in ("unread", "missed_calls")
        if isinstance(value := counts.get(name), int) and not isinstance(value, bool) and value > 0
    }


def priority(event: EventFields, tweaks: Mapping[str, Any]) -> str:
    # The spec leaves prio to the homeserver; like Synapse, high for what should
    # wake a phone (a highlight, a sound, an encrypted event the gateway cannot judge).
    if event.type == "m.room.encrypted" or tweaks.get("highlight") or tweaks.get("sound"):
        return "high"
    return "low"


def pusher_json(pusher: Pusher) -> dict[str, Any]:
    """A pusher as GET /pushers lists it."""
    body: dict[str, Any] = {
        "pushkey": pusher.pushkey,
        "kind": pusher.kind,
        "app_id": pusher.app_id,
        "app_display_name": pusher.app_display_name,
        "device_display_name": pusher.device_display_name,
        "lang": pusher.lang,
        "data": pusher.data,
    }
    if pusher.profile_tag is not None:
        body["profile_tag"] = pusher.profile_tag
    return body


class PusherService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = PushersStore(hs.database)
        # Each user's pushers, loaded when first needed and reloaded by every write
        # of this process; the delivery workers read a pusher's current row here.
        self._cache: dict[str, tuple[Pusher, ...]] = {}
        self._writes = 0
        # Who has a pusher at all, loaded once and kept by every write: most
        # users have none, and push evaluation asks for every notified member.
        self._with_pushers: set[str] | None = None
        self.delivery = PushDelivery(
            hs.config.push, lookup=self._current, on_rejected=self._remove_rejected
        )
        self._inbox: asyncio.Queue[_Pending] = asyncio.Queue()
        # The room fields of the last event pushed: evaluation hands over one event
        # for many users in a row, and they all get the same room name.
        self._last_room_fields: tuple[str, dict[str, str]] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await self.delivery.close()

    # --- the pushers API -------------------------------------------------------------

    async def get_pushers(self, user_id: str) -> list[dict[str, Any]]:
        return [pusher_json(p) for p in await self.store.user_pushers(user_id)]

    async def set_pusher(self, requester: Requester, body: Mapping[str, Any]) -> None:
        """POST /pushers/set; 400 ``M_MISSING_PARAM`` / ``M_INVALID_PARAM`` for a bad body."""
        params = parse_pusher_body(body, allow_http=self.hs.config.push.allow_http_gateways)
        user_id = requester.user_id
        if params.kind is None:
            await self.store.delete_pusher(user_id, params.app_id, params.pushkey)
            await self._reload(user_id)
            self.delivery.forget((user_id, params.app_id, params.pushkey))
            return
        others = await self.store.set_pusher(
            self._new_pusher(requester, params), remove_others=not params.append
        )
        for user in {user_id, *others}:
            await self._reload(user)
        for other in others:
            self.delivery.forget((other, params.app_id, params.pushkey))

    def _new_pusher(self, requester: Requester, params: PusherParams) -> Pusher:
        assert params.kind is not None
        return Pusher(
            user_id=requester.user_id,
            device_id=requester.device_id,
            kind=params.kind,
            app_id=params.app_id,
            pushkey=params.pushkey,
            pushkey_ts=self.hs.clock_ms(),
            app_display_name=params.app_display_name,
            device_display_name=params.device_display_name,
            profile_tag=params.profile_tag,
            lang=params.lang,
            data=params.data,
        )

    async def on_devices_deleted(self, user_id: str, device_ids: Sequence[str] | None) -> None:
        """Devices were logged out or deleted (None: all the user's): their pushers go."""
        before = {p.key for p in await self._pushers_of(user_id)}
        if not await self.store.delete_device_pushers(user_id, device_ids):
            return
        after = {p.key for p in await self._reload(user_id)}
        for key in before - after:
            self.delivery.forget(key)

    # --- the pushers of a user, cached -----------------------------------------------

    async def _pushers_of(self, user_id: str) -> tuple[Pusher, ...]:
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        writes = self._writes
        loaded = tuple(await self.store.user_pushers(user_id))
        if writes == self._writes:  # no write raced the read: safe to keep
            self._cache[user_id] = loaded
        return loaded

    async def _reload(self, user_id: str) -> tuple[Pusher, ...]:
        self._writes += 1
        loaded = tuple(await self.store.user_pushers(user_id))
        self._cache[user_id] = loaded
        if self._with_pushers is not None:
            if loaded:
                self._with_pushers.add(user_id)
            else:
                self._with_pushers.discard(user_id)
        return loaded

    async def users_with_pushers(self, user_ids: Iterable[str]) -> set[str]:
        """Those of ``user_ids`` who have a pusher: push evaluation hands only
        their notifications over (and counts their badges only for them)."""
        everyone = self._with_pushers
        if everyone is None:
            writes = self._writes
            everyone = await self.store.users_with_pushers()
            if writes == self._writes:  # no write raced the read: safe to keep
                self._with_pushers = everyone
        return {user_id for user_id in user_ids if user_id in everyone}

    def _current(self, key: PusherKey) -> Pusher | None:
        for pusher in self._cache.get(key[0], ()):
            if pusher.key == key:
                return pusher
        return None

    async def _remove_rejected(self, pusher: Pusher) -> None:
        # Push Gateway API, /notify "rejected": "Homeservers must cease sending
        # notification requests for these pushkeys and remove the associated pushers."
        logger.info(
            "push gateway rejected pushkey of %s (%s): pusher removed",
            pusher.user_id,
            pusher.app_id,
        )
        await self.store.delete_pusher(pusher.user_id, pusher.app_id, pusher.pushkey)
        await self._reload(pusher.user_id)

    # --- notifications ---------------------------------------------------------------

    def on_notification(
        self,
        *,
        user_id: str,
        room_id: str,
        event: Any,
        actions: list[Any],
        counts: dict[str, Any],
    ) -> None:
        """Queue a push for ``user_id``, whom ``event`` notifies with ``actions``
        (the matching push rule's); ``counts``: the user's ``unread`` and
        ``missed_calls`` after this event. Returns at once; never raises for a
        malformed event (it is ignored)."""
        if self._closed or not interpret_actions(actions).notify:
            return
        fields = event_fields(event, room_id)
        # "homeservers process push rules for each of the local users in the room
        # (excluding the sender)": one's own events never push.
        if fields is None or fields.sender == user_id or self._cache.get(user_id) == ():
            return
        counts = dict(counts) if isinstance(counts, Mapping) else {}
        self._inbox.put_nowait(_Pending(user_id, fields, list(actions), counts))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        while not self._inbox.empty():
            pending = self._inbox.get_nowait()
            try:
                await self._fan_out(pending)
            except Exception:  # one bad notification must not stop the others
                logger.exception("could not queue a push notification for %s", pending.user_id)

    async def _fan_out(self, pending: _Pending) -> None:
        pushers = [p for p in await self._pushers_of(pending.user_id) if p.kind == "http"]
        if not pushers:
            return
        tweaks = {
            k: v for k, v in interpret_actions(pending.actions).tweaks.items() if v is not None
        }
        short = self._short_notification(pending, tweaks)
        full: dict[str, Any] | None = None
        for pusher in pushers:
            if pusher.data.get("format") == EVENT_ID_ONLY:
                notification = short
            else:
                if full is None:
                    full = await self._full_notification(pending, short)
                notification = full
            self.delivery.enqueue(pusher.key, PushRequest(notification, tweaks))

    @staticmethod
    def _short_notification(pending: _Pending, tweaks: Mapping[str, Any]) -> dict[str, Any]:
        # Push Gateway API: with "event_id_only" only event_id, room_id, counts and
        # devices are required; prio is kept so that gateways can still pick it.
        return {
            "event_id": pending.event.event_id,
            "room_id": pending.event.room_id,
            "counts": push_counts(pending.counts),
            "prio": priority(pending.event, tweaks),
        }

    async def _full_notification(
        self, pending: _Pending, short: Mapping[str, Any]
    ) -> dict[str, Any]:
        event = pending.event
        notification = {**short, "type": event.type, "sender": event.sender}
        if self._last_room_fields is None or self._last_room_fields[0] != event.event_id:
            fields = await self._room_fields(event.room_id, event.sender)
            self._last_room_fields = (event.event_id, fields)
        notification.update(self._last_room_fields[1])
        if event.type == _MEMBER:
            notification["user_is_target"] = event.state_key == pending.user_id
        if event.content:
            notification["content"] = dict(event.content)
        return notification

    async def _room_fields(self, room_id: str, sender: str) -> dict[str, str]:
        """``room_name``, ``room_alias`` and ``sender_display_name`` from the room's
        current state, each only when set."""
        events = self.hs.rooms.events
        keys = [_NAME, _CANONICAL_ALIAS, (_MEMBER, sender)]
        ids = await events.current_state_ids(room_id, keys)
        loaded = await events.get_events(ids.values())
        content = {key: loaded[eid].event.content for key, eid in ids.items() if eid in loaded}
        fields: dict[str, str] = {}
        for name, key, field in (
            ("room_name", _NAME, "name"),
            ("room_alias", _CANONICAL_ALIAS, "alias"),
            ("sender_display_name", (_MEMBER, sender), "displayname"),
        ):
            value = content.get(key, {}).get(field)
            if isinstance(value, str) and value:
                fields[name] = value
        return fields
