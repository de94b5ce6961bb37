"""Outbound node messages go over whichever link the node speaks on: the MQTT broker or a serial port.

Serial nodes (UART/RS-485) frame the same contracts one JSON object per line; their inbound frames enter
the same router as MQTT messages. A node is on a serial port once it has spoken there.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable

from drivers.errors import LinkDownError
from drivers.serial_link import SerialLink, SerialMessage
from firmware_contracts.topics import NODE_HELLO_TOPIC, TopicError, parse_topic
from gateway.broker.messages import InboundMessage, MessageSink
from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]


class NodeTransport:
    """Routes gateway → node messages to MQTT or to the serial port the node was last heard on."""

    def __init__(self, mqtt_publish: Publish, sink: MessageSink) -> None:
        self._mqtt_publish = mqtt_publish
        self._sink = sink
        self._links: dict[str, SerialLink] = {}
        self._node_port: dict[str, str] = {}
        self.serial_send_failures = 0
        self._ratelog = RateLimitedLog(log, 60.0, time.monotonic)

    def add_link(self, link: SerialLink) -> None:
        """Register a serial link (its ``on_message`` must be ``self.on_serial``)."""
        self._links[link.port] = link

    def serial_nodes(self) -> dict[str, str]:
        """node uid → serial port."""
        return dict(self._node_port)

    async def on_serial(self, message: SerialMessage) -> None:
        """A frame from a serial node: remember where the node lives, then hand it to the router."""
        node = _node_of(message.topic, message.payload)
        if node:
            self._node_port[node] = message.port
        await self._sink.put(
            InboundMessage(
                topic=message.topic,
                payload=message.payload,
                client_id=f"serial:{message.port}",
                username=None,
                qos=1,
                received_at=time.time(),
                transport="serial",
            )
        )

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Send to a serial node over its port, everything else through the broker."""
        node = _node_of(topic, b"")
        port = self._node_port.get(node or "")
        link = self._links.get(port or "")
        if link is not None:
            try:
                await link.send(topic, payload)
            except LinkDownError as exc:
                # The command stays SENT and times out like an unanswered MQTT command.
                self.serial_send_failures += 1
                self._ratelog.warn(f"unreachable:{node}", "serial node %s unreachable: %s", node, exc)
            if not retain:
                return
        await self._mqtt_publish(topic, payload, qos, retain)


def _node_of(topic: str, payload: bytes) -> str | None:
    if topic == NODE_HELLO_TOPIC:
        try:
            hello = json.loads(payload)
        except ValueError:
            return None
        uid = hello.get("node_uid") if isinstance(hello, dict) else None
        return uid if isinstance(uid, str) else None
    try:
        return parse_topic(topic).node
    except TopicError:
        return None
