"""The per-message acknowledgement handle: done once, callbacks soon after, waiters woken, failure kept."""

from __future__ import annotations

import asyncio

from gateway.broker.messages import Ack


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_callback_runs_soon_after_set_not_during_it() -> None:
    ack, calls = Ack(), []
    ack.on_done(lambda: calls.append("a"))
    assert not ack.done()
    ack.set()
    # A group commit sets many acks in one go; the broker must see them all done before it writes PUBACKs.
    assert ack.done() and calls == []
    await _turns()
    assert calls == ["a"]
    ack.set()  # idempotent: no second call
    await _turns()
    assert calls == ["a"]


async def test_two_callbacks_and_one_registered_after_done_all_run_once() -> None:
    ack, calls = Ack(), []
    ack.on_done(lambda: calls.append(1))
    ack.on_done(lambda: calls.append(2))
    ack.set()
    ack.on_done(lambda: calls.append(3))
    await _turns()
    assert sorted(calls) == [1, 2, 3]


async def test_wait_wakes_when_set_and_returns_at_once_when_done() -> None:
    ack = Ack()
    waiter = asyncio.ensure_future(ack.wait())
    await _turns()
    assert not waiter.done()
    ack.set()
    await asyncio.wait_for(waiter, 5)
    await asyncio.wait_for(ack.wait(), 5)


async def test_fail_is_done_but_failed_and_a_later_set_does_not_clear_it() -> None:
    ack = Ack()
    waiter = asyncio.ensure_future(ack.wait())
    ack.fail()
    await asyncio.wait_for(waiter, 5)
    ack.set()
    assert ack.done() and ack.failed


async def test_a_cancelled_waiter_does_not_break_the_handle() -> None:
    ack, calls = Ack(), []
    waiter = asyncio.ensure_future(ack.wait())
    await _turns()
    waiter.cancel()
    await _turns()
    ack.on_done(lambda: calls.append("x"))
    ack.set()
    await _turns()
    assert calls == ["x"] and ack.done() and not ack.failed
