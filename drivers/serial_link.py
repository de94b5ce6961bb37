"""Nodes on a UART/RS-485 wire (pyserial-asyncio), framed one JSON object per line.

Framing (see ``serial_frame``): a node on a wire has no broker, so every line names the MQTT topic it
would have used and carries the same payload document::

    {"topic": "hydro/gh-1/zone-a/node-7/heartbeat", "payload": {"uptime_s": 12, "rssi": -60, "free_heap": 8}}

Inbound lines become ``SerialMessage(topic, payload, port)`` and are awaited through ``on_message`` (the
same router as MQTT). Partial lines are buffered; garbage bytes, non-JSON, bad frames and over-long lines
are counted in ``stats`` per reason and skipped. ``send(topic, payload)`` writes one framed line back.

``run()`` opens the port, reads until the port vanishes or errors, and reconnects with exponential
backoff on the injected clock, logging once when the link goes down and once when it recovers.

Opening must not reset an attached ESP32 (its auto-reset circuit listens to DTR/RTS): the port is built
unopened with ``dsrdtr=False, rtscts=False``, DTR and RTS are set de-asserted, and only then opened, so
pyserial applies the de-asserted levels as part of ``open()``. (Linux itself raises DTR/RTS briefly
when a tty is opened; pyserial clears them immediately, which the ESP32's EN RC network rides out.)
Exceptions raised by ``on_message`` are bugs and propagate out of ``run()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import serial
import serial_asyncio

from drivers.errors import LinkDownError
from drivers.line_framing import LineSplitter
from drivers.ports import Clock
from drivers.serial_frame import FrameError, decode_frame, encode_frame

log = logging.getLogger(__name__)

STAT_KEYS = (
    "frames", "garbage", "not_json", "bad_frame", "oversize", "partial_dropped",
    "connects", "disconnects", "connect_failures", "sent",
)  # fmt: skip
_READ_HIGH_WATER = 256 * 1024  # pause reading when this many received bytes wait for the consumer


@dataclass(frozen=True)
class SerialMessage:
    """One framed message from a serial node: the topic it names and its JSON payload bytes."""

    topic: str
    payload: bytes
    port: str


def build_serial(port: str, baudrate: int) -> serial.Serial:
    """An UNOPENED ``serial.Serial`` for ``port`` with DTR and RTS already set de-asserted."""
    ser = serial.serial_for_url(
        port, do_not_open=True, baudrate=baudrate, rtscts=False, dsrdtr=False, xonxoff=False, exclusive=True
    )
    ser.dtr = False
    ser.rts = False
    return ser


def open_serial(port: str, baudrate: int) -> serial.Serial:
    """Open ``port`` without asserting DTR/RTS (non-blocking open; safe on the loop)."""
    ser = build_serial(port, baudrate)
    ser.open()
    return ser


class _LineProtocol(asyncio.Protocol):
    """Hands received chunks to the link's task; pauses the port when the task falls behind."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost_exc: BaseException | None = None
        self.made = asyncio.Event()
        self.closed = asyncio.Event()
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # serial_asyncio's SerialTransport is one
        self.made.set()

    def data_received(self, data: bytes) -> None:
        self._chunks.put_nowait(data)
        self._queued += len(data)
        if self._queued > _READ_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_exc = exc
        self._chunks.put_nowait(None)
        self._writable.set()
        self.closed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def next_chunk(self) -> bytes | None:
        """Next received bytes, or ``None`` once the connection is gone."""
        chunk = await self._chunks.get()
        if chunk is not None:
            self._queued -= len(chunk)
            transport = self.transport
            if self._reading_paused and self._queued < _READ_HIGH_WATER // 4 and not self.closed.is_set():
                if transport is not None:  # always set once data flows
                    transport.resume_reading()
                self._reading_paused = False
        return chunk

    async def wait_writable(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        await self._writable.wait()


class SerialLink:
    """One serial port with framed-JSON nodes on it."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        on_message: Callable[[SerialMessage], Awaitable[None]],
        clock: Clock,
        name: str,
        max_line_bytes: int = 65536,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        self.port = port
        self.baudrate = baudrate
        self.name = name
        self.max_line_bytes = max_line_bytes
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._on_message = on_message
        self._clock = clock
        self._protocol: _LineProtocol | None = None
        self._connected = asyncio.Event()
        self._down_logged = False
        self._reasons_logged: set[str] = set()

    @property
    def connected(self) -> bool:
        """Whether the port is open right now."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once the port is open."""
        await self._connected.wait()

    async def run(self) -> None:
        """Connect, read and dispatch lines, reconnect with backoff; runs until cancelled."""
        delay = self.reconnect_min_s
        while True:
            try:
                transport, protocol = await self._open()
            except (OSError, serial.SerialException) as exc:
                self.stats["connect_failures"] += 1
                self._note_down(f"cannot open {self.port}: {exc}")
                await self._clock.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            delay = self.reconnect_min_s
            self._note_up()
            try:
                await self._receive(protocol)
            finally:
                await self._drop(transport, protocol)
            self.stats["disconnects"] += 1
            self._note_down(f"{self.port} lost: {protocol.lost_exc or 'closed by the other side'}")
            await self._clock.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    async def send(self, topic: str, payload: bytes) -> None:
        """Write one framed line; ``LinkDownError`` when not connected, ``ValueError`` for a bad frame."""
        line = encode_frame(topic, payload)
        if len(line) - 1 > self.max_line_bytes:
            raise ValueError(f"frame of {len(line) - 1} bytes exceeds max_line_bytes={self.max_line_bytes}")
        protocol = self._protocol
        if protocol is None or protocol.closed.is_set():
            raise LinkDownError(f"{self.name}: {self.port} is not connected")
        await protocol.wait_writable()
        if protocol.closed.is_set():
            raise LinkDownError(f"{self.name}: {self.port} went down while sending")
        if protocol.transport is None:  # pragma: no cover - sends wait for connection_made
            raise LinkDownError(f"{self.name}: {self.port} is not connected")
        protocol.transport.write(line)
        self.stats["sent"] += 1

    async def _open(self) -> tuple[asyncio.Transport, _LineProtocol]:
        ser = open_serial(self.port, self.baudrate)
        try:
            transport, protocol = await serial_asyncio.connection_for_serial(
                asyncio.get_running_loop(), _LineProtocol, ser
            )
        except BaseException:
            ser.close()
            raise
        try:
            await protocol.made.wait()  # connection_made is scheduled, not called, by the transport
        except BaseException:
            transport.abort()  # closes the port once the loop runs the scheduled callbacks
            raise
        self._protocol = protocol
        return transport, protocol

    async def _receive(self, protocol: _LineProtocol) -> None:
        splitter = LineSplitter(self.max_line_bytes)
        while (chunk := await protocol.next_chunk()) is not None:
            lines = splitter.feed(chunk)
            if splitter.oversize:
                self._count("oversize", f"line longer than {self.max_line_bytes} bytes", splitter.oversize)
                splitter.oversize = 0
            for line in lines:
                await self._handle_line(line)
        if splitter.reset():
            self._count("partial_dropped", "unfinished line dropped on disconnect")

    async def _handle_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            topic, payload = decode_frame(line)
        except FrameError as exc:
            self._count(exc.reason, str(exc))
            return
        self.stats["frames"] += 1
        await self._on_message(SerialMessage(topic, payload, self.port))

    async def _drop(self, transport: asyncio.Transport, protocol: _LineProtocol) -> None:
        self._protocol = None
        self._connected.clear()
        if not transport.is_closing():
            transport.abort()
        try:
            await asyncio.wait_for(asyncio.shield(protocol.closed.wait()), timeout=1.0)
        except TimeoutError:  # pragma: no cover - a transport that never reports loss; nothing left to do
            log.warning("%s: %s did not close cleanly", self.name, self.port)

    def _count(self, reason: str, detail: str, n: int = 1) -> None:
        self.stats[reason] += n
        if reason not in self._reasons_logged:
            self._reasons_logged.add(reason)
            log.warning("%s: skipped input from %s (%s); further ones are only counted", self.name, self.port, detail)
        else:
            log.debug("%s: skipped input from %s (%s)", self.name, self.port, detail)

    def _note_up(self) -> None:
        self.stats["connects"] += 1
        self._connected.set()
        if self._down_logged:
            log.info("%s: %s connected again", self.name, self.port)
            self._down_logged = False
        else:
            log.info("%s: %s connected at %d baud", self.name, self.port, self.baudrate)

    def _note_down(self, reason: str) -> None:
        self._connected.clear()
        if not self._down_logged:
            log.warning("%s: %s; retrying with backoff up to %.0f s", self.name, reason, self.reconnect_max_s)
            self._down_logged = True
        else:
            log.debug("%s: %s", self.name, reason)
