"""The /sync long-poll notifier (ranvier/services/notifier.py): a wait ends
when the user's counter moves or at its timeout, and leaves nothing behind."""

from __future__ import annotations

import asyncio

import pytest

from ranvier.services.notifier import Notifier


async def test_a_notification_wakes_the_waiter_at_once() -> None:
    notifier = Notifier()
    version = notifier.version("@a:x")
    waiting = asyncio.create_task(notifier.wait("@a:x", version, 30))
    await asyncio.sleep(0)
    assert notifier.waiting() == 1
    notifier.notify_users(["@b:x"])  # someone else: still waiting
    await asyncio.sleep(0.01)
    assert not waiting.done()
    notifier.notify_users(["@a:x"])
    assert await asyncio.wait_for(waiting, 1) is True
    assert notifier.waiting() == 0
    assert notifier.wakeups == 1


async def test_the_timeout_ends_the_wait_with_false() -> None:
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await notifier.wait("@a:x", notifier.version("@a:x"), 0.05) is False
    assert 0.04 <= loop.time() - started < 1
    assert notifier.waiting() == 0
    assert await notifier.wait("@a:x", notifier.version("@a:x"), 0) is False


async def test_a_change_before_the_wait_returns_at_once() -> None:
    notifier = Notifier()
    version = notifier.version("@a:x")
    notifier.notify_users(["@a:x"])  # between the look and the wait
    assert await notifier.wait("@a:x", version, 30) is True
    assert notifier.waiting() == 0


async def test_a_cancelled_wait_leaves_no_waiter() -> None:
    notifier = Notifier()
    waiting = asyncio.create_task(notifier.wait("@a:x", notifier.version("@a:x"), 30))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert notifier.waiting() == 0
    notifier.notify_users(["@a:x"])  # nothing left to wake
    assert notifier.wakeups == 0
