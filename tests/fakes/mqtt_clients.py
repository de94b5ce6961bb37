"""Real MQTT clients for the tests: paho-mqtt (its own network thread, like a device), a raw asyncio
client for protocol-level behaviour (silent nodes, half-open connections), and a socket flooder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.fakes.paho_node import release_sockets


@dataclass(frozen=True)
class Received:
    """One PUBLISH as a client saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int


class PahoClient:
    """A paho client; blocking paho calls run in threads so the broker's loop keeps serving."""

    def __init__(self, client_id: str, port: int, *, username: str | None = None, password: str | None = None,
                 clean_session: bool = True, keepalive: int = 30, will: tuple[str, bytes] | None = None,
                 manual_ack: bool = False) -> None:
        self.port = port
        self.keepalive = keepalive
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                                  reconnect_on_failure=False, manual_ack=manual_ack)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.messages: queue.Queue[Received] = queue.Queue()
        self._connacks: queue.Queue[tuple[str, bool]] = queue.Queue()
        self._subacks: queue.Queue[list[int]] = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, msg.payload, msg.qos, bool(msg.retain), bool(msg.dup), msg.mid))

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self._connacks.put((reason.getName(), bool(flags.session_present)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        self._subacks.put([int(code.value) for code in codes])

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnected.set()

    async def connect(self, timeout: float = 5.0) -> tuple[str, bool]:
        """Connect; (CONNACK reason name, session present)."""
        def run() -> tuple[str, bool]:
            self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive)
            self.client.loop_start()
            reason, session_present = self._connacks.get(timeout=timeout)
            if reason != "Success":  # refused: paho's thread ends, but its sockets stay open until collected
                self.client.loop_stop()
                release_sockets(self.client)
            return reason, session_present
        return await asyncio.to_thread(run)

    async def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[int]:
        """Subscribe; the SUBACK return codes (granted QoS, or 128 refused)."""
        def run() -> list[int]:
            self.client.subscribe(topic, qos)
            return self._subacks.get(timeout=timeout)
        return await asyncio.to_thread(run)

    async def publish(self, topic: str, payload: Any, qos: int = 1, retain: bool = False) -> None:
        """Publish (dicts/lists as JSON); at QoS 1 returns once the PUBACK arrived."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if qos:
            await asyncio.to_thread(info.wait_for_publish, 5.0)
            assert info.is_published(), f"no PUBACK for {topic}"

    async def get(self, timeout: float = 5.0) -> Received:
        """The next received message."""
        return await asyncio.to_thread(self.messages.get, True, timeout)

    async def nothing(self, within: float = 0.5) -> bool:
        """True if no message arrives within ``within`` seconds."""
        try:
            await asyncio.to_thread(self.messages.get, True, within)
        except queue.Empty:
            return True
        return False

    def ack(self, mid: int) -> None:
        """Acknowledge a QoS 1 message (with manual_ack)."""
        self.client.ack(mid, 1)

    async def disconnect(self) -> None:
        """Clean DISCONNECT (no will)."""
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        release_sockets(self.client)

    async def go_silent(self) -> None:
        """Stop sending anything (no PINGREQ) but keep the TCP connection open: a node powered off behind NAT."""
        await asyncio.to_thread(self.client.loop_stop)

    async def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT."""
        await asyncio.to_thread(self.client.loop_stop)
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        release_sockets(self.client)


# ---------------------------------------------------------------- raw protocol
def mqtt_string(value: str | bytes) -> bytes:
    """A length-prefixed MQTT string."""
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def varint(n: int) -> bytes:
    """MQTT remaining length."""
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    """A complete packet."""
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id: str, keepalive: int = 30, *, clean: bool = True, will: tuple[str, bytes] | None = None,
                   username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT (MQTT 3.1.1)."""
    flags = 0x02 if clean else 0
    payload = mqtt_string(client_id)
    if will is not None:
        flags |= 0x04 | (1 << 3)
        payload += mqtt_string(will[0]) + mqtt_string(will[1])
    if username is not None:
        flags |= 0x80
        payload += mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_string(password)
    return packet(0x10, mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def publish_packet(topic: str, payload: bytes, qos: int = 0, pid: int = 1, *, dup: bool = False) -> bytes:
    """PUBLISH (``dup``: the DUP flag of a re-send)."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return packet(first, mqtt_string(topic) + (struct.pack("!H", pid) if qos else b"") + payload)


class RawClient:
    """A byte-level MQTT client in the test's loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, source: str | None = None) -> None:
        """Open the TCP connection only (from loopback address ``source``, e.g. 127.0.0.2, if given)."""
        local = (source, 0) if source is not None else None
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=local)

    async def connect(self, client_id: str, keepalive: int = 30, **kwargs: Any) -> tuple[int, bool]:
        """CONNECT; (return code, session present)."""
        await self.open()
        self.send(connect_packet(client_id, keepalive, **kwargs))
        kind, _flags, body = await self.read_packet()
        assert kind == 2, f"expected CONNACK, got type {kind}"
        return body[1], bool(body[0] & 1)

    def send(self, data: bytes) -> None:
        """Write bytes."""
        assert self.writer is not None
        self.writer.write(data)

    async def read_packet(self, timeout: float = 5.0) -> tuple[int, int, bytes]:
        """(type, flags, body) of the next packet."""
        assert self.reader is not None
        first = (await asyncio.wait_for(self.reader.readexactly(1), timeout))[0]
        length, multiplier = 0, 1
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            if not byte & 0x80:
                break
        body = await self.reader.readexactly(length) if length else b""
        return first >> 4, first & 0x0F, body

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """Wait for EOF (or reset) from the broker, then close our side: the connection is over."""
        assert self.reader is not None
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            while data:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except ConnectionError:
            pass
        self.close()
        return True

    def close(self) -> None:
        """Close our side."""
        if self.writer is not None:
            self.writer.close()


def login(port: int, client_id: str, username: str, password: str) -> int:
    """Blocking CONNECT from a thread (a device of its own); the CONNACK return code."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connect_packet(client_id, 30, username=username, password=password))
        connack = b""
        while len(connack) < 4 and (data := sock.recv(4 - len(connack))):
            connack += data
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        return connack[3]


def login_burst(port: int, users: list[str], password: str) -> list[int]:
    """All ``users`` CONNECT at once, each from its own thread (run it in another process: no shared GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(users)) as devices:
        return list(devices.map(lambda user: login(port, user, user, password), users))


# ---------------------------------------------------------------- load
def flood(port: int, qos: int, seconds: float, client_id: str, topic: str) -> dict[str, int]:
    """Blast pre-encoded PUBLISH packets from a blocking socket for ``seconds`` (QoS 1: never waits for PUBACK)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(connect_packet(client_id, 60))
    assert sock.recv(4)[3:4] == b"\x00"
    payload = json.dumps({"metric_type": "ph", "value": 6.1, "ts": 0}).encode()
    chunk = b"".join(publish_packet(topic, payload, qos, 1 + i) for i in range(50))
    acked = [0]

    def drain() -> None:
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                acked[0] += len(data) // 4

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sock.settimeout(0.2)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
            sent += 50
        except TimeoutError:
            continue  # the broker is not reading: back-pressure
        except OSError:
            break
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    reader.join(2)
    return {"sent": sent, "acked": acked[0]}


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """Samples RSS from a thread (a starved loop cannot hide the peak)."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        """Stop sampling; growth over the baseline in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


class LagProbe:
    """Measures event-loop lag the way a 100 Hz safety loop would feel it.

    ``budget`` is the lag the tests allow: 1 s. The defects these tests catch are stalls of whole seconds
    (50 argon2 verifications on the loop take seconds; a flood processed in one synchronous pass
    likewise), while a busy 2-core CI machine alone can delay a wake-up by a few hundred ms: the figure a
    safety loop really feels is measured by ``bench/broker_flood.py``, not asserted here.
    """

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.worst = 0.0
        self.budget = 1.0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, loop.time() - before - self.period)

    async def stop(self) -> float:
        """Stop; the worst lag seen, in seconds."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.worst
