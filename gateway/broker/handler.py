"""One client connection of the embedded broker: amqtt's protocol handler with our reader, keepalive and QoS flows.

Patched amqtt 0.12.1 defects (the broker side is in server.py):
- keepalive is not enforced: the reader's read timeout is logged and ignored, so a silent node stays
  "connected" and its will never fires (upstream #308) → ``_timers`` closes it after keepalive × grace;
- an outgoing QoS 1 message whose PUBACK takes more than a hard-coded 5 s is dropped from the session and
  never redelivered (upstream #391) → messages stay in ``session.inflight_out`` until acknowledged, are
  re-sent with DUP every ``inflight_retry_s`` and on every reconnect [MQTT-4.4.0-1];
- one task per received packet, a PUBACK sent before the message is accepted and unbounded per-session
  queues (no back-pressure on publishers) → packets are read and handled in order, a QoS 1/2 PUBLISH is
  acknowledged (PUBACK/PUBREC, in the order received [MQTT-4.6.0-2]) only once what it carries is committed
  to SQLite (its ``Ack`` is done), at most ``ack_window`` waiting per client: a client that outruns the
  disk is slowed down by TCP itself;
- the disconnect waiter is created after the reader starts, so a client that disconnects during start-up
  leaves a session "connected" forever → it is created first and never reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from typing import Any, Protocol

from amqtt.errors import NoDataError, ProtocolHandlerError
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler, Subscription, UnSubscription
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage, Session

from gateway.broker import wire
from gateway.broker.admission import TokenBucket
from gateway.broker.limits import BrokerLimits
from gateway.broker.messages import Ack
from gateway.broker.outbox import Outbox
from gateway.clock import Clock

log = logging.getLogger(__name__)
# Linux: send the TCP ACK for what was received now, not after the delayed-ACK timer (see _quickack).
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

_QOS2_ACKS = "hydro.qos2_acks"  # Session.attributes: packet id → Ack of a QoS 2 message awaiting PUBREL


class ProtocolViolation(Exception):
    """The client broke the protocol or a limit that ends the connection; ``reason`` is counted."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BrokerSide(Protocol):
    """What a connection needs from the broker."""

    limits: BrokerLimits
    clock: Clock

    async def admit(self, handler: GatewayProtocolHandler, topic: str, payload: bytes, qos: int, retain: bool,
                    ack: Ack | None = None, dup: bool = False) -> bool:
        """Accept (or wait to accept) one PUBLISH from this connection; False: dropped, nothing will set ``ack``."""
        ...

    def outbox(self, session: Session) -> Outbox:
        """The session's queue of messages still to be sent."""
        ...

    def note(self, event: str, who: str, detail: str = "") -> None:
        """Count (and rate-limited log) a refusal, a drop or a disconnection."""
        ...


class GatewayProtocolHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt ships no type information
    """Reads a client's packets in order, enforces its keepalive, and sends it its session's messages."""

    def __init__(self, plugins_manager: Any, session: Session | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(plugins_manager, session, loop)
        self.side: BrokerSide | None = None
        self.transport: asyncio.WriteTransport | None = None
        self.bucket: TokenBucket | None = None
        self.acl_cache: dict[str, bool] = {}
        self.finished = asyncio.Event()
        self._closing = False
        self._admitting = False
        self._last_rx = 0.0
        self._sent_at: dict[int, float] = {}
        self._helpers: set[asyncio.Task[None]] = set()
        self._pump_waiting = False
        # Received QoS 1/2 messages not yet acknowledged, in arrival order: (packet type, packet id, handle).
        self._acks: deque[tuple[int, int, Ack]] = deque()
        self._send_acks_soon = self._send_acks  # one bound method for all of this client's waiting acks
        self._sock: Any = None
        self._quickack_due = False

    def bind(self, side: BrokerSide, transport: asyncio.WriteTransport | None, bucket: TokenBucket | None) -> None:
        """Connect the handler to its broker, its socket and its rate limit (None: unlimited)."""
        self.side = side
        self.transport = transport
        self.bucket = bucket
        self._sock = transport.get_extra_info("socket") if transport is not None else None

    def _init_session(self, session: Session) -> None:
        super()._init_session(session)
        # amqtt's write-inactivity timer is a no-op in the broker but is re-armed on every packet sent.
        self.keepalive_timeout = None

    @property
    def who(self) -> str:
        """The client's username, else its client id (for logs and counters)."""
        session = self.session
        return str(session.username or session.client_id) if session is not None else "?"

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start reading, watching the keepalive and re-sending what is in flight; then send the backlog."""
        session, side = self.session, self.side
        if session is None or side is None or self.writer is None:
            raise ProtocolHandlerError("Handler is not attached to a stream")
        self._disconnect_waiter = self._loop.create_future()
        self._reader_ready = asyncio.Event()
        self._reader_stopped = asyncio.Event()
        self._last_rx = side.clock.monotonic()
        self._reader_task = asyncio.create_task(self._reader_loop())
        self._spawn(self._timers())
        # [MQTT-4.4.0-1] unacknowledged QoS 1 messages first, with DUP and their original packet ids.
        for message in list(session.inflight_out.values()):
            self._send_inflight(message, dup=True)
        self.pump()

    @property
    def closing(self) -> bool:
        """True once this connection has begun to close."""
        return self._closing

    async def stop(self) -> None:
        """Stop reading and writing; QoS 1 messages (in flight or queued) stay for the session's next connection."""
        if self._closing:
            return
        self._closing = True
        if self.session is not None and self.side is not None:
            # [MQTT-3.1.2-5] only QoS 1/2 messages are kept for an absent persistent session.
            self.side.outbox(self.session).drop_qos0()
        current = asyncio.current_task()
        for task in list(self._helpers):
            if task is not current:
                task.cancel()
        self._stop_waiters()
        reader = self._reader_task
        if reader is not None and reader is not current and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self._close_writer()
        if self._disconnect_waiter is not None and not self._disconnect_waiter.done():
            self._disconnect_waiter.set_result(None)
        while not self._pending_subscriptions.empty():
            self._pending_subscriptions.get_nowait()
        while not self._pending_unsubscriptions.empty():
            self._pending_unsubscriptions.get_nowait()

    async def _close_writer(self) -> None:
        writer, transport = self.writer, self.transport
        if writer is None:
            return
        try:
            # close() drains first: bounded, so a client that stopped reading cannot hold us here.
            await asyncio.wait_for(writer.close(), 1.0)
        except (TimeoutError, OSError):
            # amqtt's close() drains before it closes: a peer that already reset the connection makes the
            # drain raise and leaves the socket open, so close it here.
            if transport is not None:
                transport.abort()

    async def handle_disconnect(self, disconnect: DisconnectPacket | None) -> None:
        """Resolve the disconnect waiter once: DISCONNECT (no will) or None (connection lost: will)."""
        waiter = self._disconnect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(disconnect)

    async def wait_disconnect(self) -> DisconnectPacket | None:
        """Wait until the client disconnects or the connection is lost."""
        waiter = self._disconnect_waiter
        return await waiter if waiter is not None else None

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helper_done)

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        self._helpers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection helper of %s failed", self.who, exc_info=task.exception())

    def abort(self) -> None:
        """Drop the connection at once (no flushing); the reader then ends it as a lost connection."""
        if self.transport is not None:
            self.transport.abort()
        elif self._reader_task is not None:
            self._reader_task.cancel()

    # ------------------------------------------------------------------ reading
    async def _reader_loop(self) -> None:
        side, reader = self.side, self.reader
        assert side is not None and reader is not None and self._reader_ready is not None
        self._reader_ready.set()
        read = reader.read
        clock = side.clock
        max_packet = side.limits.max_packet_bytes
        handled = 0
        try:
            while True:
                first = int((await read(1))[0])
                self._last_rx = clock.monotonic()
                length = await self._read_length()
                if length > max_packet:
                    raise ProtocolViolation("packet_too_large", f"{length} bytes")
                body = await read(length) if length else b""
                if not await self._dispatch(first, body):
                    break
                handled += 1
                if handled % 64 == 0:
                    # Packets already buffered are read without suspending: let other clients and the
                    # safety loop run between batches of a fast publisher.
                    await asyncio.sleep(0)
        except ProtocolViolation as exc:
            side.note(exc.reason, self.who, exc.detail)
        except wire.MalformedPacket as exc:
            side.note("malformed_packet", self.who, str(exc))
        except (asyncio.IncompleteReadError, NoDataError, OSError):
            pass  # connection lost or closed by us
        except asyncio.CancelledError:
            pass  # stop() is ending this connection
        except Exception:
            # A bug must close this connection (its will is published), not leave it half-alive.
            log.exception("reading from %s failed", self.who)
        finally:
            await self.handle_connection_closed()
            self._reader_stopped.set()
        await self.stop()

    async def _read_length(self) -> int:
        assert self.reader is not None
        value, multiplier = 0, 1
        for _ in range(4):
            byte = int((await self.reader.read(1))[0])
            value += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                return value
            multiplier *= 128
        raise wire.MalformedPacket("remaining length longer than 4 bytes")

    async def _dispatch(self, first: int, body: bytes) -> bool:
        kind, flags = first >> 4, first & 0x0F
        session, side = self.session, self.side
        assert session is not None and side is not None
        if kind == wire.PUBLISH:
            self._admitting = True
            try:
                await self._on_publish(flags, body)
            finally:
                # Time spent waiting for room on our side is not silence on the client's.
                self._admitting = False
                self._last_rx = side.clock.monotonic()
        elif kind == wire.PUBACK:
            self._on_puback(wire.packet_id(body))
        elif kind == wire.PINGREQ:
            await self._write(wire.PINGRESP)
        elif kind == wire.PUBREL and flags == 0x02:
            pid = wire.packet_id(body)
            session.inflight_in.pop(pid, None)
            session.attributes.get(_QOS2_ACKS, {}).pop(pid, None)
            await self._write(wire.encode_ack(wire.PUBCOMP, pid))
        elif kind == wire.SUBSCRIBE and flags == 0x02:
            pid, filters = wire.decode_subscribe(body)
            await self._pending_subscriptions.put(Subscription(pid, filters))
        elif kind == wire.UNSUBSCRIBE and flags == 0x02:
            pid, names = wire.decode_unsubscribe(body)
            await self._pending_unsubscriptions.put(UnSubscription(pid, names))
        elif kind == wire.DISCONNECT:
            await self.handle_disconnect(DisconnectPacket())
            return False
        elif kind not in (wire.PUBREC, wire.PUBCOMP):
            # PUBREC/PUBCOMP answer QoS 2 sends, which we never make (subscriptions are granted QoS <= 1).
            raise ProtocolViolation("protocol_violation", f"packet type {kind} with flags {flags:#x}")
        return True

    async def _on_publish(self, flags: int, body: bytes) -> None:
        side, session = self.side, self.session
        assert side is not None and session is not None
        qos = (flags >> 1) & 0x03
        if qos == 3:
            raise wire.MalformedPacket("QoS 3 [MQTT-3.3.1-4]")
        topic, pid, payload = wire.decode_publish(qos, body)
        retain = bool(flags & 0x01)
        dup = bool(flags & 0x08)
        if qos == 2:
            assert pid is not None
            # QoS 2 "method A" [MQTT-4.3.3]: passed on when PUBLISH arrives; a PUBLISH re-sent while its
            # PUBREL is pending is a duplicate and only acknowledged again (once the first one is durable).
            pending: dict[int, Ack] = session.attributes.setdefault(_QOS2_ACKS, {})
            ack = pending.get(pid) if pid in session.inflight_in else None
            if ack is None:
                if len(session.inflight_in) >= side.limits.client_queue_max:
                    raise ProtocolViolation("qos2_window", f"{len(session.inflight_in)} PUBREL pending")
                ack = Ack()
                if not await side.admit(self, topic, payload, qos, retain, ack, dup):
                    ack.set()
                session.inflight_in[pid] = IncomingApplicationMessage(pid, topic, qos, b"", retain)
                pending[pid] = ack
            await self._acknowledge(wire.PUBREC, pid, ack)
            return
        if pid is None:
            await side.admit(self, topic, payload, qos, retain)
            return
        ack = Ack()
        if not await side.admit(self, topic, payload, qos, retain, ack, dup):
            ack.set()  # not routed (ACL, rate): acknowledged at once, never left in flight
        await self._acknowledge(wire.PUBACK, pid, ack)

    async def _acknowledge(self, kind: int, pid: int, ack: Ack) -> None:
        """Send PUBACK/PUBREC once ``ack`` is done, after those of earlier messages; bound what waits."""
        acks = self._acks
        acks.append((kind, pid, ack))
        if ack.done() and len(acks) == 1:
            self._send_acks()
        else:
            ack.on_done(self._send_acks_soon)
            if not self._quickack_due:
                self._quickack_due = True
                self._loop.call_soon(self._quickack)
        side = self.side
        assert side is not None
        while len(acks) >= side.limits.ack_window:
            # Stop reading this client until its oldest message is durable.
            await acks[0][2].wait()
            self._send_acks()
        if self._socket_full() and self.writer is not None:
            # A client that publishes but does not read its acknowledgements stops being read.
            await self.writer.drain()

    def _quickack(self) -> None:
        """ACK at the TCP level what was read, without waiting for the PUBACK that will carry it.

        A PUBACK now waits for the group commit (tens of ms); until it goes out, Linux holds the TCP ACK of
        the PUBLISH for its delayed-ACK timer (40 ms), and a client with Nagle's algorithm on (paho, lwIP on
        the ESP32 nodes) holds its next PUBLISH until that ACK: every message then paid ~40 ms more. Once
        per loop iteration and connection, after the packets already read were handled.
        """
        self._quickack_due = False
        if self._sock is not None and _TCP_QUICKACK is not None and not self._closing:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def _send_acks(self) -> None:
        acks = self._acks
        if not acks or not acks[0][2].done():
            return
        ready = []
        failed = False
        while acks and acks[0][2].done():
            kind, pid, ack = acks.popleft()
            if ack.failed:
                failed = True
                break
            ready.append(wire.encode_ack(kind, pid))
        writer = self.writer
        if writer is not None and not self._closing and ready:
            # One write for everything a group commit made durable, not one send() per PUBACK.
            writer.write(b"".join(ready))
        if failed:
            # A message that could not be stored is never acknowledged, and later ones may not be before it
            # [MQTT-4.6.0-2]: end the connection; the node re-sends what is unacknowledged after reconnecting.
            acks.clear()
            self.abort()

    async def _write(self, data: bytes) -> None:
        writer = self.writer
        if writer is not None:
            writer.write(data)
            # Waits only while the socket buffer is over its high-water mark: a client that publishes
            # but does not read its acknowledgements stops being read.
            await writer.drain()

    # ------------------------------------------------------------------ sending
    def pump(self) -> None:
        """Send from the session's outbox while the in-flight window and the socket buffer have room."""
        session, side, writer = self.session, self.side, self.writer
        if self._closing or session is None or side is None or writer is None:
            return
        backlog = side.outbox(session).backlog
        inflight = session.inflight_out
        window = side.limits.inflight_window
        while backlog:
            if self._socket_full():
                self._pump_after_drain()
                return
            message = backlog[0]
            if message.qos and len(inflight) >= window:
                return
            backlog.popleft()
            if message.qos:
                pid = session.next_packet_id
                out = OutgoingApplicationMessage(pid, message.topic, message.qos, message.payload, message.retain)
                inflight[pid] = out
                self._send_inflight(out, dup=False)
            else:
                writer.write(wire.encode_publish(message.topic, message.payload, 0, None, message.retain, False))

    def _send_inflight(self, out: OutgoingApplicationMessage, dup: bool) -> None:
        assert self.writer is not None and self.side is not None
        self.writer.write(wire.encode_publish(out.topic, bytes(out.data), out.qos or 1, out.packet_id, out.retain, dup))
        self._sent_at[out.packet_id] = self.side.clock.monotonic()

    def _on_puback(self, pid: int) -> None:
        session = self.session
        assert session is not None
        if session.inflight_out.pop(pid, None) is not None:
            self._sent_at.pop(pid, None)
            self.pump()

    def _socket_full(self) -> bool:
        transport, side = self.transport, self.side
        return transport is not None and side is not None and \
            transport.get_write_buffer_size() > side.limits.write_buffer_max

    def _pump_after_drain(self) -> None:
        if not self._pump_waiting:
            self._pump_waiting = True
            self._spawn(self._drain_then_pump())

    async def _drain_then_pump(self) -> None:
        assert self.writer is not None
        try:
            await self.writer.drain()
        except OSError:
            return
        finally:
            self._pump_waiting = False
        self.pump()

    # ------------------------------------------------------------------ timers
    async def _timers(self) -> None:
        """Keepalive and in-flight re-sends, in one sleeping task per connection."""
        side, session = self.side, self.session
        assert side is not None and session is not None
        clock = side.clock
        # [MQTT-3.1.2-24] keepalive × grace without a packet: disconnect "as if the network had failed".
        limit = session.keep_alive * side.limits.keepalive_grace if session.keep_alive > 0 else None
        retry = side.limits.inflight_retry_s
        while True:
            now = clock.monotonic()
            wake = now + retry
            if limit is not None and self._admitting:
                wake = min(wake, now + limit)
            elif limit is not None:
                idle = now - self._last_rx
                if idle >= limit:
                    side.note("keepalive_expired", self.who,
                              f"silent for {idle:.1f} s (keepalive {session.keep_alive} s)")
                    self.abort()
                    return
                wake = min(wake, self._last_rx + limit)
            for pid, out in list(session.inflight_out.items()):
                due = self._sent_at.get(pid, now) + retry
                if due > now:
                    wake = min(wake, due)
                elif self._socket_full():
                    wake = min(wake, now + 0.5)
                else:
                    self._send_inflight(out, dup=True)
            await clock.sleep(max(wake - now, 0.01))
