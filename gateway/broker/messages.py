"""What the broker hands to the router, and the handle that tells it when to acknowledge."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Ack:
    """Done once what one QoS 1/2 message (or one HTTP ingest call) carried is committed, or dropped as invalid.

    The broker sends the PUBACK when it is done; whoever takes over the message's durability (the telemetry
    writer) calls ``defer()`` so that the router does not complete it when the handler returns.

    One exists per message waiting for the router or the writer (thousands at overload), so it is a plain slot
    object: an ``asyncio.Future`` with a done-callback (plus its copied context) cost ~3x the memory. A future is
    made only for ``wait()``, which the broker calls on the oldest message of a client at its ack window.
    """

    __slots__ = ("_callback", "_done", "_waiter", "deferred", "failed")

    def __init__(self) -> None:
        self._done = False
        self._callback: Callable[[], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.deferred = False
        self.failed = False

    def defer(self) -> None:
        """Someone else will call ``set()`` (after their commit)."""
        self.deferred = True

    def set(self) -> None:
        """Complete the handle (idempotent)."""
        if not self._done:
            self._complete()

    def fail(self) -> None:
        """The message could not be made durable (storage error): it must not be acknowledged."""
        if not self._done:
            self.failed = True
            self._complete()

    def _complete(self) -> None:
        self._done = True
        callback, self._callback = self._callback, None
        if callback is not None:
            # Soon, not now (as a future's callbacks): a group commit completes many acks in one go, and the
            # broker then writes all their PUBACKs at once.
            asyncio.get_running_loop().call_soon(callback)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def done(self) -> bool:
        """True once it may be acknowledged."""
        return self._done

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when done (at once, soon, if already done). One callback per ack (the broker's)."""
        if self._done:
            asyncio.get_running_loop().call_soon(callback)
            return
        previous = self._callback
        if previous is None:
            self._callback = callback
        else:
            def both() -> None:
                previous()
                callback()
            self._callback = both

    async def wait(self) -> None:
        """Wait until done."""
        if self._done:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One application message received from a node (over MQTT or a serial link)."""

    topic: str
    payload: bytes
    client_id: str
    username: str | None
    qos: int
    received_at: float
    transport: str = "mqtt"
    # QoS 1/2 over MQTT: acknowledged to the node once done (None: nothing waits, e.g. QoS 0 or a will).
    ack: Ack | None = None
    dup: bool = False


class MessageSink(Protocol):
    """The bounded queue of inbound messages (the router's), in arrival order.

    ``put`` may wait (back-pressure) but never drops; ``offer`` never waits and says False when full, so
    that the caller (the broker, for QoS 0) counts the drop.

    The sink owns ``message.ack``: it completes it once the message is durable (or dropped as invalid);
    until then the node gets no PUBACK.
    """

    async def put(self, message: InboundMessage) -> None:
        """Queue one message for the router."""
        ...

    def offer(self, message: InboundMessage) -> bool:
        """Queue one message if there is room, at once; False when full."""
        ...

    @property
    def depth(self) -> int:
        """Messages waiting."""
        ...
