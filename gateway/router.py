"""The in-loop router: a bounded queue fed by the broker and serial links, drained into async handlers.

Messages that arrive before the handlers are ready wait in the queue; nothing is ever run on
another loop or thread, and every handler is awaited. A message's ``Ack`` (QoS 1/2) is completed here
once its handler returned, unless the handler handed it to the telemetry writer (``Ack.defer``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from firmware_contracts.topics import ParsedTopic, TopicError, TopicKind, parse_topic
from firmware_contracts.validate import MessageKind, decode_and_validate
from gateway.broker.messages import InboundMessage
from gateway.clock import Clock
from gateway.metrics import Metrics
from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

_KIND_FOR_TOPIC: dict[TopicKind, MessageKind] = {
    TopicKind.NODE_HELLO: MessageKind.NODE_HELLO,
    TopicKind.HEARTBEAT: MessageKind.HEARTBEAT,
    TopicKind.TELEMETRY: MessageKind.TELEMETRY,
    TopicKind.COMMAND_RESPONSE: MessageKind.COMMAND_RESPONSE,
    TopicKind.LWT: MessageKind.STATUS,
}


@dataclass(frozen=True, slots=True)
class Routed:
    """A validated inbound message as handlers see it."""

    topic: ParsedTopic
    payload: Any
    message: InboundMessage


Handler = Callable[[Routed], Awaitable[None]]


class RejectedMessage(Exception):
    """Raised by a handler for bad input it detected (unknown node, …); counted and logged, not fatal."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Router:
    """Validates each inbound message against the firmware contracts and awaits its handler."""

    def __init__(self, metrics: Metrics, clock: Clock, queue_max: int = 10_000, max_payload: int = 65536) -> None:
        self._queue: asyncio.Queue[InboundMessage] = asyncio.Queue(maxsize=queue_max)
        self._handlers: dict[TopicKind, Handler] = {}
        self._metrics = metrics
        self._max_payload = max_payload
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)
        self.processed = 0

    def on(self, kind: TopicKind, handler: Handler) -> None:
        """Register the handler for one topic kind."""
        self._handlers[kind] = handler

    async def put(self, message: InboundMessage) -> None:
        """Queue a message; waits (back-pressure on the publisher) when the queue is full."""
        await self._queue.put(message)
        self._metrics.router_queue_depth.set(self._queue.qsize())

    @property
    def depth(self) -> int:
        """Messages waiting."""
        return self._queue.qsize()

    async def run(self) -> None:
        """Drain the queue forever, in arrival order."""
        while True:
            message = await self._queue.get()
            try:
                await self.dispatch(message)
            finally:
                self.processed += 1
                self._queue.task_done()
            if self.processed % 64 == 0:
                # Queue.get() does not suspend while items are waiting: give the writer, the safety
                # loop and the broker their turn under a flood.
                self._metrics.router_queue_depth.set(self._queue.qsize())
                await asyncio.sleep(0)

    async def dispatch_pending(self) -> None:
        """Handle whatever is still queued, without the run loop (shutdown, after the broker closed)."""
        while not self._queue.empty():
            await self.dispatch(self._queue.get_nowait())
            self._queue.task_done()

    async def drain(self) -> None:
        """Wait until everything queued so far has been handled."""
        await self._queue.join()

    def reject(self, reason: str, who: str, detail: str) -> None:
        """Count and (rate-limited per sender) log a dropped message."""
        self._metrics.messages_rejected.labels(reason=reason).inc()
        self._ratelog.warn(f"{who}:{reason}", "dropped message from %s: %s (%s)", who, reason, detail)

    async def dispatch(self, message: InboundMessage) -> None:
        """Parse, validate and hand one message to its handler; then complete its ack unless a handler deferred it.

        Handlers that write SQLite themselves (registry, commands) have committed when they return; the
        telemetry path defers the ack to the writer's commit. A dropped message is acknowledged at once.
        """
        # Not in a finally: a cancelled handler (shutdown) has committed nothing, so nothing is acknowledged.
        await self._dispatch(message)
        ack = message.ack
        if ack is not None and not ack.deferred:
            ack.set()

    async def _dispatch(self, message: InboundMessage) -> None:
        who = message.username or message.client_id or "?"
        try:
            topic = parse_topic(message.topic)
        except TopicError as exc:
            self.reject("bad_topic", who, f"{message.topic!r}: {exc}")
            return
        if topic.node:
            who = topic.node
        kind = _KIND_FOR_TOPIC.get(topic.kind)
        handler = self._handlers.get(topic.kind)
        if kind is None or handler is None:
            self.reject("unhandled_topic", who, message.topic)
            return
        payload, failure = decode_and_validate(kind, message.payload, max_bytes=self._max_payload)
        if failure is not None:
            self.reject(failure.code, who, failure.message)
            return
        self._metrics.messages_received.labels(kind=topic.kind.value).inc()
        try:
            await handler(Routed(topic, payload, message))
        except RejectedMessage as exc:
            self.reject(exc.reason, who, exc.detail)
        except asyncio.CancelledError:
            raise
        except sqlite3.OperationalError as exc:  # disk full / I/O: the storage guard alerts, one line here
            self._metrics.messages_rejected.labels(reason="storage_error").inc()
            self._ratelog.warn(f"storage:{topic.kind.value}", "%s from %s not stored: %s", topic.kind.value, who, exc)
            if message.ack is not None:
                message.ack.fail()  # not durable: no PUBACK, the node re-sends it (after a reconnect)
        except Exception:
            # A handler bug on one message must not stop ingestion for every node (one traceback a minute per kind).
            self._metrics.messages_rejected.labels(reason="handler_error").inc()
            self._ratelog.error(f"bug:{topic.kind.value}", "handler for %s failed on message from %s",
                                topic.kind.value, who, exc_info=True)
