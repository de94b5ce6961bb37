"""The in-loop router: the one bounded queue fed by the broker and serial links, drained into async handlers.

The broker admits a PUBLISH straight into this queue (``put`` for QoS 1/2 and wills, ``offer`` for QoS 0,
which the broker drops when the queue is full); there is no second queue of the same message in front of it.
Messages that arrive before the handlers are ready wait in the queue; nothing is ever run on
another loop or thread, and every handler is awaited. A message's ``Ack`` (QoS 1/2) is completed here
once its handler returned, unless the handler handed it to the telemetry writer (``Ack.defer``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from firmware_contracts.models import CommandResponse, Heartbeat, NodeHello, NodeStatus
from firmware_contracts.topics import ParsedTopic, TopicError, TopicKind, parse_topic
from firmware_contracts.validate import JsonDocument, decode_and_validate, kind_for_topic
from gateway.broker.messages import InboundMessage
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Routed(Generic[M]):
    """A validated inbound message as handlers see it: its typed contract model, and the document it came from.

    ``payload`` is the schema-valid JSON document as decoded: the message identity (``boot``/``seq``) and the
    stored node_hello come from it. Telemetry's model *is* that document (see ``Router.on_telemetry``).
    """

    topic: ParsedTopic
    payload: JsonDocument
    message: InboundMessage
    model: M


Handler = Callable[[Routed[M]], Awaitable[None]]
_Bound = Callable[[ParsedTopic, JsonDocument, InboundMessage], Awaitable[None]]


def _bind(parse: Callable[[JsonDocument], M], handler: Handler[M]) -> _Bound:
    """The handler behind a parser: the model is built from the schema-valid document, then handed over."""

    async def bound(topic: ParsedTopic, payload: JsonDocument, message: InboundMessage) -> None:
        await handler(Routed(topic, payload, message, parse(payload)))

    return bound


def _object(payload: JsonDocument) -> Mapping[str, object]:
    """The document of an object-only message kind (the schema allows nothing else)."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _document(payload: JsonDocument) -> JsonDocument:
    return payload


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
        self._handlers: dict[TopicKind, _Bound] = {}
        self._metrics = metrics
        self._max_payload = max_payload
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)
        self.processed = 0

    def on_hello(self, handler: Handler[NodeHello]) -> None:
        """Register the node_hello handler."""
        self._handlers[TopicKind.NODE_HELLO] = _bind(lambda p: NodeHello.from_payload(_object(p)), handler)

    def on_heartbeat(self, handler: Handler[Heartbeat]) -> None:
        """Register the heartbeat handler."""
        self._handlers[TopicKind.HEARTBEAT] = _bind(lambda p: Heartbeat.from_payload(_object(p)), handler)

    def on_status(self, handler: Handler[NodeStatus]) -> None:
        """Register the handler of a node's status (its last will says offline)."""
        self._handlers[TopicKind.LWT] = _bind(lambda p: NodeStatus.from_payload(_object(p)), handler)

    def on_command_response(self, handler: Handler[CommandResponse]) -> None:
        """Register the command_response handler."""
        self._handlers[TopicKind.COMMAND_RESPONSE] = _bind(lambda p: CommandResponse.from_payload(_object(p)), handler)

    def on_telemetry(self, handler: Handler[JsonDocument]) -> None:
        """Register the telemetry handler; it gets the schema-valid document itself.

        Not ``TelemetrySample`` objects: this is the hot path (tens of thousands of samples a second in a
        flood), and ingest turns each sample straight into its own tuple; a dataclass per sample on the way
        would only double the work for fields the schema has already checked.
        """
        self._handlers[TopicKind.TELEMETRY] = _bind(_document, handler)

    async def put(self, message: InboundMessage) -> None:
        """Queue a message; waits (back-pressure on the publisher) when the queue is full."""
        await self._queue.put(message)
        self._metrics.router_queue_depth.set(self._queue.qsize())

    def offer(self, message: InboundMessage) -> bool:
        """Queue a message if there is room; False (not queued) when the queue is full."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        self._metrics.router_queue_depth.set(self._queue.qsize())
        return True

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
        handler = self._handlers.get(topic.kind)
        if handler is None:
            self.reject("unhandled_topic", who, message.topic)
            return
        payload, failure = decode_and_validate(kind_for_topic(topic.kind), message.payload,
                                               max_bytes=self._max_payload)
        if failure is not None:
            self.reject(failure.code, who, failure.message)
            return
        assert payload is not None  # decode_and_validate returns a document or a failure
        self._metrics.messages_received.labels(kind=topic.kind.value).inc()
        try:
            await handler(topic, payload, message)
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
