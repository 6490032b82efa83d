"""The push evaluation queue of ranvier/services/push.py: a /sync waits for
the events of its rooms queued before it, never for later ones."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from ranvier.services.push import PushService


def fake_event(room_id: str, number: int) -> Any:
    return SimpleNamespace(room_id=room_id, event_id=f"${number}")


async def test_waits_for_queued_events_of_its_rooms_only() -> None:
    service = PushService(SimpleNamespace(database=None))  # type: ignore[arg-type]
    evaluated: list[list[str]] = []
    gate = asyncio.Event()

    async def evaluate(batch: list[Any]) -> None:
        await gate.wait()
        await asyncio.sleep(0.001)  # evaluation takes time: others get to run
        evaluated.append([event.event_id for event in batch])
        # Traffic keeps coming into the busy room while each batch runs.
        if len(evaluated) < 50:
            service.on_event(fake_event("!busy", 100 + len(evaluated)))

    service._evaluate_batch = evaluate  # type: ignore[method-assign]
    service.on_event(fake_event("!busy", 1))
    service.on_event(fake_event("!quiet", 2))
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
    service.on_event(fake_event("!busy", 999))  # after close: dropped
    assert service._worker is None
