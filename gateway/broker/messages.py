"""What the broker hands to the router."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


class MessageSink(Protocol):
    """Receives inbound messages in arrival order; ``put`` may wait (back-pressure) but never drops silently."""

    async def put(self, message: InboundMessage) -> None:
        """Queue one message for the router."""
        ...
