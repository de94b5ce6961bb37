"""The broker's pure parts: rate limit, outbox policy, wire codec, turnstile."""

from __future__ import annotations

import asyncio

import pytest

from gateway.broker import wire
from gateway.broker.admission import TokenBucket
from gateway.broker.outbox import Outbox, Outgoing
from gateway.broker.pacing import Turnstile


def test_token_bucket_allows_bursts_then_the_rate():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.1)  # next token in 1/rate
    assert bucket.take(0.1) == 0.0
    assert bucket.take(0.1) == pytest.approx(0.1)
    assert [bucket.take(100.0) for _ in range(6)][-1] > 0  # refills only up to the burst


def test_outbox_drops_new_qos0_and_oldest_qos1_when_full():
    box = Outbox(limit=2)
    a, b = Outgoing("t/a", b"", 1), Outgoing("t/b", b"", 1)
    assert box.push(a) is None and box.push(b) is None
    late_qos0 = Outgoing("t/c", b"", 0)
    assert box.push(late_qos0) is late_qos0
    assert box.push(Outgoing("t/d", b"", 1)) is a
    assert [m.topic for m in box.backlog] == ["t/b", "t/d"]


def test_wire_round_trip_and_malformed_packets():
    packet = wire.encode_publish("hydro/x", b"{}", 1, 7, retain=True, dup=True)
    assert packet[0] == 0x30 | 0x08 | 0x02 | 0x01
    assert wire.decode_publish(1, packet[2:]) == ("hydro/x", 7, b"{}")
    assert wire.decode_subscribe(b"\x00\x05" + b"\x00\x03a/b" + b"\x01") == (5, [("a/b", 1)])
    for qos, body in ((0, b"\x00\x09short"), (1, b"\x00\x01a\x00\x00"), (0, b"\x00\x02\xff\xfe"), (0, b"\x00\x01\x00")):
        with pytest.raises(wire.MalformedPacket):
            wire.decode_publish(qos, body)
    with pytest.raises(wire.MalformedPacket):
        wire.decode_subscribe(b"\x00\x05\x00\x01a\x03")  # QoS 3
    assert wire.encode_connack(True, wire.NOT_AUTHORIZED) == b"\x20\x02\x00\x05"  # no session on refusal


async def test_turnstile_lets_one_waiter_through_per_loop_iteration():
    loop = asyncio.get_running_loop()
    turnstile = Turnstile()
    iteration = 0
    running = True

    def tick() -> None:
        nonlocal iteration
        iteration += 1
        if running:
            loop.call_soon(tick)

    tick()
    passed_at: list[int] = []

    async def arrive() -> None:
        await turnstile.wait()
        passed_at.append(iteration)

    await asyncio.gather(*(arrive() for _ in range(10)))
    running = False
    assert len(set(passed_at)) == 10 and passed_at == sorted(passed_at)
