"""Admission control: a flooding client cannot grow the gateway's memory, delay other nodes or stall the loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor

import paho.mqtt.client as mqtt
from conftest import RecordingSink

from firmware_contracts.validate import JsonDocument
from gateway.broker.messages import InboundMessage
from gateway.clock import SystemClock
from gateway.prometheus import Metrics
from gateway.router import Routed, Router
from tests.conftest import eventually
from tests.fakes.mqtt_clients import LagProbe, PahoClient, RssPeak, flood

FLOOD = "hydro/gh1/zone-a/nd-flood/telemetry"
GOOD = "hydro/gh1/zone-a/nd-good/telemetry"
RATE = 200


@contextlib.asynccontextmanager
async def other_device() -> AsyncIterator[ProcessPoolExecutor]:
    """A process for the flooder (no shared GIL), with pytest's existing heap frozen out of GC pauses."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as device:
        await asyncio.get_running_loop().run_in_executor(device, abs, 0)
        gc.freeze()
        try:
            yield device
        finally:
            gc.unfreeze()


async def good_node_telemetry(port: int, count: int = 30) -> None:
    node = PahoClient("nd-good", port)
    await node.connect()
    for _ in range(count):
        await node.publish(GOOD, {"metric_type": "ph", "value": 6.0, "ts": time.time()})
        await asyncio.sleep(0.05)
    await node.disconnect()


def within_rate(sink: RecordingSink) -> bool:
    """The flooder's accepted messages fit the token bucket: burst + rate × the time they took."""
    flooded = sink.on(FLOOD)
    span = flooded[-1].received_at - flooded[0].received_at
    return len(flooded) <= RATE + RATE * span + 5


def latencies(sink: RecordingSink) -> list[float]:
    return [m.received_at - json.loads(m.payload)["ts"] for m in sink.on(GOOD)]


async def test_qos0_flood_is_dropped_over_the_rate_limit_and_nobody_else_notices(broker_factory):
    broker, sink = await broker_factory(rate_limit_msgs_per_s=RATE, rate_limit_burst=RATE)
    loop = asyncio.get_running_loop()
    async with other_device() as device:
        rss, probe = RssPeak(), LagProbe()
        flooding = loop.run_in_executor(device, flood, broker.port, 0, 2.0, "nd-flood", FLOOD)
        await asyncio.sleep(0.2)
        await good_node_telemetry(broker.port)
        sent = (await flooding)["sent"]
        lag, growth = await probe.stop(), rss.stop()
    # Every packet sent was read: accepted within the rate, or dropped and counted.
    await eventually(lambda: broker.stats()["dropped_qos0_rate"] + len(sink.on(FLOOD)) == sent)
    accepted = len(sink.on(FLOOD))
    assert sent > 10 * accepted, (sent, accepted)  # the client really flooded
    assert within_rate(sink)
    assert len(latencies(sink)) == 30 and max(latencies(sink)) < 1.0
    assert growth < 30 * 2**20, f"RSS grew {growth / 2**20:.0f} MB"
    assert lag < probe.budget, f"event loop stalled {lag * 1000:.0f} ms"


async def test_qos1_flood_is_slowed_down_to_the_rate_not_queued(broker_factory):
    broker, sink = await broker_factory(rate_limit_msgs_per_s=RATE, rate_limit_burst=RATE)
    loop = asyncio.get_running_loop()
    async with other_device() as device:
        rss, probe = RssPeak(), LagProbe()
        flooding = loop.run_in_executor(device, flood, broker.port, 1, 2.0, "nd-flood", FLOOD)
        await asyncio.sleep(0.2)
        await good_node_telemetry(broker.port)
        result = await flooding
        lag, growth = await probe.stop(), rss.stop()
    stats = broker.stats()
    accepted = len(sink.on(FLOOD))
    # Never acknowledged before it was accepted: the flooder's unacknowledged backlog stays in its own socket.
    assert result["acked"] <= accepted and within_rate(sink)
    assert stats["throttled_qos1"] > 0 and "dropped_qos0_rate" not in stats
    assert len(latencies(sink)) == 30 and max(latencies(sink)) < 1.0
    assert growth < 30 * 2**20, f"RSS grew {growth / 2**20:.0f} MB"
    assert lag < probe.budget, f"event loop stalled {lag * 1000:.0f} ms"


class GatedSink(RecordingSink):
    """A router whose bounded queue holds ``size`` messages and that takes none until ``gate`` is set."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.queue: asyncio.Queue[InboundMessage] = asyncio.Queue(size)
        self.task = asyncio.create_task(self._run())

    async def put(self, message: InboundMessage) -> None:
        await self.queue.put(message)

    def offer(self, message: InboundMessage) -> bool:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    async def _run(self) -> None:
        await self.gate.wait()
        while True:
            await RecordingSink.put(self, await self.queue.get())


async def test_full_queue_drops_new_qos0_and_holds_back_qos1_publishers(broker_factory):
    sink = GatedSink(100)
    broker, _ = await broker_factory(sink=sink)
    noisy = PahoClient("nd-noisy", broker.port)
    careful = PahoClient("nd-careful", broker.port)
    await noisy.connect()
    await careful.connect()
    for n in range(300):
        await noisy.publish("hydro/gh1/zone-a/nd-noisy/telemetry", {"n": n}, qos=0)
    await eventually(lambda: broker.stats().get("dropped_qos0_queue_full", 0) == 200)  # 100 queued
    assert broker.stats()["inbound_queue"] == 100

    info = careful.client.publish("hydro/gh1/zone-a/nd-careful/telemetry", b'{"n": "qos1"}', qos=1)
    await asyncio.to_thread(info.wait_for_publish, 0.5)
    assert not info.is_published()  # no PUBACK: the message is not accepted while there is no room
    sink.gate.set()
    await asyncio.to_thread(info.wait_for_publish, 5.0)
    assert info.is_published() and info.rc == mqtt.MQTT_ERR_SUCCESS
    await eventually(lambda: len(sink.messages) == 101)
    assert [json.loads(m.payload)["n"] for m in sink.messages] == [*range(100), "qos1"]  # arrival order kept
    await noisy.disconnect()
    await careful.disconnect()
    sink.task.cancel()


async def test_telemetry_nobody_subscribes_to_costs_no_delivery_work(broker_factory):
    broker, sink = await broker_factory()
    node = PahoClient("nd-ph-1", broker.port)
    await node.connect()
    for n in range(20):
        await node.publish("hydro/gh1/zone-a/nd-ph-1/telemetry", {"n": n}, qos=0)
    await node.publish("hydro/gh1/zone-a/nd-ph-1/telemetry", {"n": 20}, qos=1)
    await eventually(lambda: len(sink.messages) == 21)
    stats = broker.stats()
    assert (stats["subscriptions"], stats["outbound_backlog"], stats["inflight_out"]) == (0, 0, 0)
    await node.disconnect()


async def test_the_routers_queue_is_the_only_one_a_message_waits_in(broker_factory):
    # Production wiring: the broker admits straight into the real router's bounded queue. While the router
    # is not draining it, QoS 0 beyond its size is dropped and counted, QoS 1 gets no PUBACK; once it
    # drains, every accepted message reaches the handler in arrival order.
    metrics = Metrics()
    router = Router(metrics, SystemClock(), queue_max=100)
    seen: list[object] = []

    async def on_telemetry(routed: Routed[JsonDocument]) -> None:
        seen.append(routed.payload)

    router.on_telemetry(on_telemetry)
    broker, _ = await broker_factory(sink=router)
    noisy = PahoClient("nd-noisy", broker.port)
    careful = PahoClient("nd-careful", broker.port)
    await noisy.connect()
    await careful.connect()
    doc = {"metric_type": "ph", "value": 5.92, "ts": 1735732800, "channel": "ph1", "boot": "a3f9c1", "seq": 0}
    for n in range(150):
        await noisy.publish("hydro/gh1/zone-a/nd-noisy/telemetry", {**doc, "seq": n}, qos=0)
    await eventually(lambda: broker.stats().get("dropped_qos0_queue_full", 0) == 50)
    assert router.depth == broker.stats()["inbound_queue"] == 100
    assert metrics.registry.get_sample_value("hydro_router_queue_depth") == 100

    info = careful.client.publish("hydro/gh1/zone-a/nd-careful/telemetry",
                                  json.dumps({**doc, "seq": 999}).encode(), qos=1)
    await asyncio.to_thread(info.wait_for_publish, 0.5)
    assert not info.is_published()  # no room in the one queue: not accepted, no PUBACK
    draining = asyncio.create_task(router.run())
    try:
        await asyncio.to_thread(info.wait_for_publish, 5.0)
        assert info.is_published() and info.rc == mqtt.MQTT_ERR_SUCCESS
        await eventually(lambda: len(seen) == 101)
        assert [d["seq"] for d in seen] == [*range(100), 999]  # type: ignore[index]
    finally:
        draining.cancel()
        await noisy.disconnect()
        await careful.disconnect()
