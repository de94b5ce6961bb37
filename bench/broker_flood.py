"""Flood the embedded MQTT broker from one client; watch RSS, throughput, queues and a good node's latency.

Each broker runs in its own process (so RSS is the broker's alone) on 127.0.0.1; this process runs the
clients: one raw-socket flooder that blasts pre-encoded PUBLISH packets as fast as the socket takes them
(QoS 1: without waiting for PUBACKs, the misbehaving case), and one well-behaved paho node publishing
QoS 1 telemetry every 50 ms with its send time in the payload. The broker side measures, at the point where
a message leaves the broker for the gateway (the router sink; for stock amqtt, its broadcast loop):
delivered msg/s, the good node's latency, peak RSS, peak queue sizes and the event loop's worst lag.

Scenarios: ``qos0`` and ``qos1`` floods, and ``ingest`` (one well-behaved fast QoS 1 publisher with a
100-message window and no rate limit: the broker's throughput ceiling).

    .venv/bin/python bench/broker_flood.py [--seconds 5] [--brokers stock,gateway] [--scenarios qos0,qos1,ingest]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLOOD_TOPIC = "hydro/gh1/zone-a/nd-flood/telemetry"
GOOD_TOPIC = "hydro/gh1/zone-a/nd-good/telemetry"
INGEST_TOPIC = "hydro/gh1/zone-a/nd-fast/telemetry"


# ---------------------------------------------------------------- broker process
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Probe:
    """Where a message leaves the broker: counts, good-node latencies."""

    def __init__(self) -> None:
        self.delivered = 0
        self.first: float | None = None
        self.last = 0.0
        self.latencies: list[float] = []

    def seen(self, topic: str, data: bytes | bytearray) -> None:
        now = time.time()
        self.delivered += 1
        if self.first is None:
            self.first = now
        self.last = now
        if topic == GOOD_TOPIC:
            self.latencies.append(now - json.loads(bytes(data))["ts"])


async def _stock_broker(probe: _Probe, port: int) -> Any:
    from amqtt.broker import Broker

    class CountingQueue(asyncio.Queue[dict[str, Any]]):
        async def get(self) -> dict[str, Any]:
            item = await super().get()
            probe.seen(item["topic"], item["data"])
            return item

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    broker._broadcast_queue = CountingQueue()
    await broker.start()
    return broker


async def _gateway_broker(probe: _Probe, port: int, scenario: str) -> Any:
    from gateway.broker.acl import TopicACL
    from gateway.broker.auth import Authenticator
    from gateway.broker.messages import InboundMessage
    from gateway.broker.server import EmbeddedBroker

    class Sink:
        async def put(self, message: InboundMessage) -> None:
            probe.seen(message.topic, message.payload)
            ack = getattr(message, "ack", None)  # PUBACK after commit: this sink "commits" on arrival
            if ack is not None:
                ack.set()

        def offer(self, message: InboundMessage) -> bool:  # QoS 0 since the broker's own queue went away
            probe.seen(message.topic, message.payload)
            return True

        depth = 0

    kwargs: dict[str, Any] = {}
    try:
        from gateway.broker.limits import BrokerLimits

        if scenario == "ingest":  # the throughput ceiling: no per-node rate limit
            kwargs["limits"] = BrokerLimits(rate_limit_msgs_per_s=1e9, rate_limit_burst=10**9)
    except ImportError:  # the first GatewayBroker had no limits
        pass
    embedded = EmbeddedBroker("127.0.0.1", port, Sink(), Authenticator([], True), TopicACL(True), **kwargs)
    await embedded.start()
    return embedded


def _queue_sizes(broker: Any) -> dict[str, int]:
    sizes = {
        "amqtt_broadcast": broker._broadcast_queue.qsize(),
        "amqtt_session_inbox": sum(s.delivered_message_queue.qsize() for s, _ in broker._sessions.values()),
        "amqtt_tasks": len(broker._tasks_queue),
    }
    stats = getattr(broker, "stats", None)
    if stats is not None:
        sizes["gateway_inbound"] = int(stats()["inbound_queue"])
    return sizes


async def _serve(kind: str, port: int, scenario: str, conn: Connection) -> None:
    probe = _Probe()
    if kind == "stock":
        broker = await _stock_broker(probe, port)
        stop = broker.shutdown
    else:
        embedded = await _gateway_broker(probe, port, scenario)
        broker, stop = embedded.broker, embedded.stop
    peak = {"rss": _rss_bytes(), "lag": 0.0}
    peak_queues: dict[str, int] = {}
    done = threading.Event()

    def sample_rss() -> None:  # a thread, so a starved loop cannot hide the peak
        while not done.wait(0.05):
            peak["rss"] = max(peak["rss"], _rss_bytes())

    async def sample_loop() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            peak["lag"] = max(peak["lag"], time.perf_counter() - before - 0.01)
            for name, size in _queue_sizes(broker).items():
                peak_queues[name] = max(peak_queues.get(name, 0), size)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    ticker = asyncio.create_task(sample_loop())
    rss0 = _rss_bytes()
    conn.send("ready")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    final_queues = _queue_sizes(broker)
    ticker.cancel()
    done.set()
    lat = sorted(probe.latencies)
    span = (probe.last - probe.first) if probe.first is not None else 0.0
    conn.send({
        "rss_start_mb": rss0 / 2**20,
        "rss_peak_mb": peak["rss"] / 2**20,
        "delivered": probe.delivered,
        "delivered_per_s": probe.delivered / span if span else 0.0,
        "good_received": len(lat),
        "good_p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "good_max_ms": 1000 * lat[-1] if lat else float("nan"),
        "loop_lag_max_ms": 1000 * peak["lag"],
        "queues_peak": peak_queues,
        "queues_end": final_queues,
        "stats": broker.stats() if hasattr(broker, "stats") else {},
    })
    with contextlib.suppress(Exception):
        await asyncio.wait_for(stop(), 10)


def broker_process(kind: str, port: int, scenario: str, conn: Connection) -> None:
    """Entry point of the broker process."""
    asyncio.run(_serve(kind, port, scenario, conn))


# ---------------------------------------------------------------- client side
def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _connect(client_id: str) -> bytes:
    return _packet(0x10, _mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _mqtt_str(client_id))


def _publish(topic: str, payload: bytes, qos: int, pid: int) -> bytes:
    body = _mqtt_str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return _packet(0x30 | (qos << 1), body)


def _open(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_connect(client_id))
    connack = sock.recv(4)
    assert connack[:1] == b"\x20" and connack[3:4] == b"\x00", connack
    return sock


def _drain(sock: socket.socket, counter: list[int]) -> None:
    with contextlib.suppress(OSError):
        while data := sock.recv(65536):
            counter[0] += len(data) // 4  # PUBACKs are 4 bytes


def flood(port: int, qos: int, seconds: float, client_id: str = "nd-flood", topic: str = FLOOD_TOPIC,
          window: int | None = None) -> dict[str, float]:
    """Blast PUBLISH packets for ``seconds``; with ``window``, keep at most that many QoS 1 unacknowledged."""
    sock = _open(port, client_id)
    payload = json.dumps({"metric_type": "ph", "value": 6.1, "ts": 0}).encode()
    chunk = b"".join(_publish(topic, payload, qos, 1 + i) for i in range(100))
    acked = [0]
    reader = threading.Thread(target=_drain, args=(sock, acked), daemon=True)
    if qos:
        reader.start()
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if window is not None and sent - acked[0] > window:
                time.sleep(0.0005)
                continue
            sock.sendall(chunk)
            sent += 100
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    return {"sent": sent, "sent_per_s": sent / seconds, "acked": acked[0]}


def good_node(port: int, stop: threading.Event, sent: list[int]) -> None:
    """A paho node publishing QoS 1 telemetry every 50 ms."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nd-good")
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    while not stop.wait(0.05):
        client.publish(GOOD_TOPIC, json.dumps({"metric_type": "ph", "value": 6.0, "ts": time.time()}), qos=1)
        sent[0] += 1
    client.disconnect()
    client.loop_stop()


def subscriber(port: int, stop: threading.Event, received: list[int]) -> None:
    """A paho client subscribed to ``hydro/#`` at QoS 1 (a monitoring tool on the LAN)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="monitor")

    def on_message(*_: Any) -> None:
        received[0] += 1

    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.subscribe("hydro/#", 1)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_one(kind: str, scenario: str, seconds: float, with_subscriber: bool = False) -> dict[str, Any]:
    """One broker, one scenario; returns the broker's measurements plus the client side's."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    port = _free_port()
    proc = ctx.Process(target=broker_process, args=(kind, port, scenario, child))
    proc.start()
    assert parent.poll(30) and parent.recv() == "ready"
    stop = threading.Event()
    good_sent = [0]
    good = threading.Thread(target=good_node, args=(port, stop, good_sent))
    good.start()
    monitor_received = [0]
    monitor = threading.Thread(target=subscriber, args=(port, stop, monitor_received))
    if with_subscriber:
        monitor.start()
    time.sleep(0.3)
    if scenario == "ingest":
        client = flood(port, 1, seconds, "nd-fast", INGEST_TOPIC, window=100)
    else:
        client = flood(port, 1 if scenario == "qos1" else 0, seconds)
    time.sleep(1.0)  # let the broker catch up what it accepted
    stop.set()
    good.join()
    if with_subscriber:
        monitor.join()
    parent.send("stop")
    result: dict[str, Any] = parent.recv() if parent.poll(60) else {"error": "broker did not answer"}
    proc.join(20)
    if proc.is_alive():
        proc.kill()
    result.update(client_sent=client["sent"], client_sent_per_s=client["sent_per_s"], good_sent=good_sent[0])
    if with_subscriber:
        result["monitor_received"] = monitor_received[0]
    return result


ROWS = (
    ("client_sent_per_s", "flooder sent msg/s", "{:,.0f}"),
    ("delivered_per_s", "delivered msg/s", "{:,.0f}"),
    ("delivered", "delivered total", "{:,}"),
    ("rss_start_mb", "RSS at start MB", "{:.1f}"),
    ("rss_peak_mb", "RSS peak MB", "{:.1f}"),
    ("good_sent", "good node sent", "{}"),
    ("good_received", "good node delivered", "{}"),
    ("good_p50_ms", "good node latency p50 ms", "{:.1f}"),
    ("good_max_ms", "good node latency max ms", "{:.1f}"),
    ("loop_lag_max_ms", "broker loop lag max ms", "{:.1f}"),
    ("monitor_received", "hydro/# subscriber got", "{:,}"),
)


def _fmt(fmt: str, value: Any) -> str:
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def main() -> None:
    """Run every (scenario, broker) pair and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--brokers", default="stock,gateway")
    parser.add_argument("--scenarios", default="qos0,qos1,ingest")
    parser.add_argument("--subscriber", action="store_true", help="also run a QoS 1 subscriber to hydro/#")
    args = parser.parse_args()
    kinds = args.brokers.split(",")
    for scenario in args.scenarios.split(","):
        results = {kind: run_one(kind, scenario, args.seconds, args.subscriber) for kind in kinds}
        extra = ", with a QoS 1 subscriber to hydro/#" if args.subscriber else ""
        print(f"\n== {scenario} ({args.seconds:g} s from one client{extra})")
        print(f"{'':28}" + "".join(f"{kind:>22}" for kind in kinds))
        for key, label, fmt in ROWS:
            print(f"{label:28}" + "".join(f"{_fmt(fmt, results[k].get(key, '-')):>22}" for k in kinds))
        names = sorted({n for k in kinds for n in results[k].get("queues_peak", {})})
        for name in names:
            peaks = [results[k].get("queues_peak", {}).get(name, "-") for k in kinds]
            ends = [results[k].get("queues_end", {}).get(name, "-") for k in kinds]
            cells = [f"{p}/{e}" for p, e in zip(peaks, ends, strict=True)]
            print(f"{'queue ' + name + ' peak/end':28}" + "".join(f"{c:>22}" for c in cells))
        for kind in kinds:
            stats = results[kind].get("stats")
            if stats:
                print(f"{kind} stats: {json.dumps(stats, sort_keys=True)}")


if __name__ == "__main__":
    main()
