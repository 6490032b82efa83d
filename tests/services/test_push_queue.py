"""The push evaluation queue of ranvier/services/push.py: a /sync waits for
the events of its rooms queued before it, never for later ones; a long-poll
sees events only once they are evaluated, and their members are woken then."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from ranvier.services.notifier import Notifier
from ranvier.services.push import PushService


def fake_event(room_id: str, number: int, sender: str = "@alice:x") -> Any:
    return SimpleNamespace(room_id=room_id, event_id=f"${number}", sender=sender)


def make_service() -> PushService:
    database = SimpleNamespace(on_positions_reset=lambda callback: None)
    hs = SimpleNamespace(database=database, notifier=Notifier())
    return PushService(hs)  # type: ignore[arg-type]


def queue(
    service: PushService,
    room_id: str,
    number: int,
    wake: set[str] | None = None,
    sender: str = "@alice:x",
) -> None:
    """An event numbered ``number`` at stream position ``number``."""
    assert service.on_event(fake_event(room_id, number, sender), number, wake)


async def test_waits_for_queued_events_of_its_rooms_only() -> None:
    service = make_service()
    evaluated: list[list[str]] = []
    gate = asyncio.Event()

    async def evaluate(batch: list[Any]) -> list[Any]:
        await gate.wait()
        await asyncio.sleep(0.001)  # evaluation takes time: others get to run
        evaluated.append([event.event_id for event in batch])
        # Traffic keeps coming into the busy room while each batch runs.
        if len(evaluated) < 50:
            queue(service, "!busy", 100 + len(evaluated))
        return []

    service._evaluate_batch = evaluate  # type: ignore[method-assign]
    queue(service, "!busy", 1)
    queue(service, "!quiet", 2)
    await service.wait_for_rooms(["!other"])  # nothing queued there: at once
    waiting = asyncio.create_task(service.wait_for_rooms(["!busy"]))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # its event is not evaluated yet
    gate.set()
    await asyncio.wait_for(waiting, 1)
    # It returned after the batch that held the events queued before it, even
    # though the room had more queued since.
    assert evaluated[0] == ["$1", "$2"]
    assert len(evaluated) < 5
    await asyncio.wait_for(service.wait_idle(), 5)  # those queued by now
    await asyncio.wait_for(service.close(), 5)  # and the rest
    assert len(evaluated) == 50
    # After close: refused (the caller wakes the members itself).
    assert not service.on_event(fake_event("!busy", 999), 999, None)
    assert service._worker is None


async def test_long_polls_see_events_once_evaluated_and_are_woken_then() -> None:
    service = make_service()
    notifier = service.hs.notifier
    gate = asyncio.Event()
    batches: list[list[str]] = []

    async def evaluate(batch: list[Any]) -> list[Any]:
        await gate.wait()
        batches.append([event.event_id for event in batch])
        return []

    service._evaluate_batch = evaluate  # type: ignore[method-assign]
    assert service.visible_position(10) == 10  # nothing queued
    before = notifier.version("@bob:x")
    queue(service, "!room", 12, {"@bob:x"})
    queue(service, "!other", 11, {"@carol:x"})  # committed first, handed over second
    queue(service, "!room", 14, {"@bob:x"})
    # A long-poll sees up to just before the first event not evaluated yet.
    assert service.visible_position(14) == 10
    assert service.visible_position(9) == 9  # never past the position asked
    assert notifier.version("@bob:x") == before  # not woken yet
    # A /sync showing positions up to 11 of "!other" waits for it, not for
    # "!room"'s; one showing only what was there before waits for nothing.
    await asyncio.wait_for(service.wait_for_positions(["!room"], 11), 1)
    waiting = asyncio.create_task(service.wait_for_positions(["!other"], 11))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set()
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(service.wait_idle(), 1)
    assert batches == [["$12", "$11", "$14"]]
    assert service.visible_position(14) == 14
    assert notifier.version("@bob:x") > before and notifier.version("@carol:x") > 0
    assert service._unfinished == [] and not service._finished_positions
    await asyncio.wait_for(service.close(), 5)


async def test_a_sender_sees_their_own_events_before_they_are_evaluated() -> None:
    """Push rules never notify a user of their own events, so their counts do
    not wait for those evaluations: their /sync shows the events at once, up
    to the first event of someone else still being evaluated."""
    service = make_service()
    notifier = service.hs.notifier
    gate = asyncio.Event()

    async def evaluate(batch: list[Any]) -> list[Any]:
        await gate.wait()
        return []

    service._evaluate_batch = evaluate  # type: ignore[method-assign]
    members = {"@bob:x", "@carol:x"}
    bob_before, carol_before = notifier.version("@bob:x"), notifier.version("@carol:x")
    queue(service, "!room", 11, members, sender="@bob:x")
    queue(service, "!room", 12, members, sender="@bob:x")
    # Bob's long-poll is woken at once, for his own event; Carol's is not.
    assert notifier.version("@bob:x") > bob_before
    assert notifier.version("@carol:x") == carol_before
    assert service.visible_position(12, "@bob:x") == 12
    assert service.visible_position(12, "@carol:x") == 10
    assert service.visible_position(12) == 10
    assert service.visible_position(11, "@bob:x") == 11  # never past the position asked
    # Bob's /sync counts wait for nothing of his own...
    await asyncio.wait_for(service.wait_for_positions(["!room"], 12, "@bob:x"), 1)
    # ...but for an event of Carol's that his timeline would show.
    queue(service, "!room", 13, members, sender="@carol:x")
    queue(service, "!room", 14, members, sender="@bob:x")
    assert service.visible_position(14, "@bob:x") == 12
    assert service.visible_position(14, "@carol:x") == 10
    waiting = asyncio.create_task(service.wait_for_positions(["!room"], 14, "@bob:x"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set()
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(service.wait_idle(), 1)
    assert service.visible_position(14, "@carol:x") == 14
    assert notifier.version("@carol:x") > carol_before
    assert service._unfinished_senders == {}
    await asyncio.wait_for(service.close(), 5)


async def test_a_failed_evaluation_still_shows_and_wakes() -> None:
    service = make_service()

    async def evaluate(batch: list[Any]) -> list[Any]:
        raise RuntimeError("the database went away")

    service._evaluate_batch = evaluate  # type: ignore[method-assign]
    queue(service, "!room", 5, {"@bob:x"})
    await asyncio.wait_for(service.wait_idle(), 1)
    assert service.visible_position(7) == 7
    assert service.hs.notifier.version("@bob:x") == 1
    await asyncio.wait_for(service.close(), 5)
