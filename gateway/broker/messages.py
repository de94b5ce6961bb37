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
    """

    __slots__ = ("_future", "deferred", "failed")

    def __init__(self) -> None:
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deferred = False
        self.failed = False

    def defer(self) -> None:
        """Someone else will call ``set()`` (after their commit)."""
        self.deferred = True

    def set(self) -> None:
        """Complete the handle (idempotent)."""
        if not self._future.done():
            self._future.set_result(None)

    def fail(self) -> None:
        """The message could not be made durable (storage error): it must not be acknowledged."""
        if not self._future.done():
            self.failed = True
            self._future.set_result(None)

    def done(self) -> bool:
        """True once it may be acknowledged."""
        return self._future.done()

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when done (at once, soon, if already done)."""
        self._future.add_done_callback(lambda _f: callback())

    async def wait(self) -> None:
        """Wait until done."""
        await asyncio.shield(self._future)


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
