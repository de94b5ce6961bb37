"""PreLoginGate's choices (which pending connection is closed, when timeouts shorten), on real asyncio.Timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.broker.prelogin import PendingConnection, PreLoginGate


@contextlib.asynccontextmanager
async def deadlines(n: int) -> AsyncIterator[list[asyncio.Timeout]]:
    """``n`` entered one-minute timeouts (what each connection's reader runs under), disarmed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        timeouts = [await stack.enter_async_context(asyncio.timeout(60.0)) for _ in range(n)]
        try:
            yield timeouts
        finally:
            for t in timeouts:
                if not t.expired():
                    t.reschedule(None)  # the gate moved some to "now": nothing of it may fire here


def closed(entry: PendingConnection, now: float) -> bool:
    when = entry.deadline.when()
    return when is not None and when <= now


def idle() -> bool:
    return False


def busy() -> bool:
    return True


async def test_an_ip_at_its_cap_loses_its_oldest_idle_connection() -> None:
    gate = PreLoginGate(max_total=100, max_per_ip=2, pressure_at=100, pressure_timeout_s=2.0)
    now = asyncio.get_running_loop().time()
    async with deadlines(4) as t:
        first = gate.enter("10.0.0.1", t[0], now, busy)  # its CONNECT arrived, not read yet
        second = gate.enter("10.0.0.1", t[1], now, idle)
        other = gate.enter("10.0.0.2", t[2], now, idle)
        third = gate.enter("10.0.0.1", t[3], now, idle)
        assert [closed(e, now) for e in (first, second, other, third)] == [False, True, False, False]
        assert second.reason == "prelogin_ip_limit"
        assert len(gate) == 3


async def test_when_every_candidate_has_data_waiting_nobody_is_closed() -> None:
    gate = PreLoginGate(max_total=100, max_per_ip=2, pressure_at=100, pressure_timeout_s=2.0)
    now = asyncio.get_running_loop().time()
    async with deadlines(3) as t:
        entries = [gate.enter("10.0.0.1", deadline, now, busy) for deadline in t]
        assert not any(closed(e, now) for e in entries)
        assert len(gate) == 3  # over the cap for the moment: each leaves as soon as its CONNECT is read
        for entry in entries:
            gate.leave(entry)
            gate.leave(entry)  # idempotent
        assert len(gate) == 0


async def test_over_the_overall_cap_the_most_crowded_ip_pays() -> None:
    gate = PreLoginGate(max_total=4, max_per_ip=10, pressure_at=100, pressure_timeout_s=2.0)
    now = asyncio.get_running_loop().time()
    async with deadlines(5) as t:
        quiet = gate.enter("10.0.0.9", t[0], now, idle)  # the oldest of all, but alone on its IP
        flood = [gate.enter("10.0.0.1", t[i], now, idle) for i in (1, 2, 3)]
        newcomer = gate.enter("10.0.0.7", t[4], now, idle)
        assert [closed(e, now) for e in (quiet, *flood, newcomer)] == [False, True, False, False, False]
        assert flood[0].reason == "prelogin_limit"
        assert len(gate) == 4


async def test_under_pressure_every_pending_connection_gets_the_short_timeout() -> None:
    gate = PreLoginGate(max_total=100, max_per_ip=100, pressure_at=2, pressure_timeout_s=2.0)
    now = asyncio.get_running_loop().time()
    async with deadlines(5) as t:
        calm = [gate.enter("10.0.0.1", t[i], now + i, idle) for i in (0, 1)]
        assert [e.deadline.when() for e in calm] == [t[0].when(), t[1].when()]  # still the minute
        crowded = [gate.enter("10.0.0.1", t[i], now + i, idle) for i in (2, 3)]
        entries = calm + crowded
        assert [e.deadline.when() for e in entries] == [e.since + 2.0 for e in entries]
        assert {e.reason for e in entries} == {"connect_timeout_pressure"}
        for entry in entries[1:]:
            gate.leave(entry)
        # Back under the threshold: a new connection has the normal timeout again.
        minute = t[4].when()
        late = gate.enter("10.0.0.1", t[4], now + 10, idle)
        assert (late.deadline.when(), late.reason) == (minute, "connect_timeout")


async def test_unread_bytes_are_seen_through_amqtts_reader_adapter() -> None:
    # The broker's idle test reads asyncio.StreamReader's private buffer: if a Python or amqtt upgrade
    # moved it, every connection would count as idle and a login burst could be cut again.
    from amqtt.adapters import StreamReaderAdapter

    from gateway.broker.server import _has_unread

    stream = asyncio.StreamReader()
    reader = StreamReaderAdapter(stream)
    assert not _has_unread(reader)
    stream.feed_data(b"\x10\x0c")  # the first bytes of a CONNECT, not read yet
    assert _has_unread(reader)
    assert await reader.read(2) == b"\x10\x0c"
    assert not _has_unread(reader)
