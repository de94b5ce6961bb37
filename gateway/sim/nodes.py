"""Simulated ESP32 nodes: real MQTT clients (amqtt's client) speaking the firmware contracts.

They run in the gateway's loop in demo mode and in tests; on the wire they are indistinguishable
from real nodes (hello, heartbeats, telemetry, last will, command responses).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from amqtt.client import MQTTClient
from amqtt.mqtt.constants import QOS_1

from firmware_contracts.topics import (
    NODE_HELLO_TOPIC,
    command_response_topic,
    heartbeat_topic,
    status_topic,
    telemetry_topic,
)

log = logging.getLogger(__name__)

ReadingsFn = Callable[[], dict[str, float | None]]
CommandFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class SimNodeSpec:
    """What a simulated node is and which metrics it reports."""

    uid: str
    hardware_id: str
    node_type: str
    zone_uid: str
    metrics: tuple[str, ...]
    channels: tuple[str, ...] = ()
    fw_version: str = "1.4.2"
    extra: dict[str, Any] = field(default_factory=dict)


class SimNode:
    """One simulated node connected to the broker at ``uri``."""

    def __init__(
        self,
        spec: SimNodeSpec,
        gh_uid: str,
        uri: str,
        readings: ReadingsFn,
        on_command: CommandFn | None = None,
        telemetry_s: float = 2.0,
        heartbeat_s: float = 10.0,
        password: str | None = None,
    ) -> None:
        self.spec = spec
        self._gh = gh_uid
        self._uri = uri
        self._readings = readings
        self._on_command = on_command
        self._telemetry_s = telemetry_s
        self._heartbeat_s = heartbeat_s
        self._password = password
        self._started = time.monotonic()
        self.sent = 0
        # The message identity (firmware_contracts README): a new boot id per simulated power-up, one counter
        # for every data message of the boot, kept across reconnects as a node keeps it in RTC memory.
        self._boot = secrets.token_hex(3)
        self._seq = 0

    def _client(self) -> MQTTClient:
        status = status_topic(self._gh, self.spec.zone_uid, self.spec.uid)
        return MQTTClient(
            client_id=self.spec.uid,
            config={
                "keep_alive": 10,
                "auto_reconnect": False,
                "will": {"topic": status, "message": '{"status":"offline"}', "qos": 1, "retain": True},
            },
        )

    async def run(self) -> None:
        """Connect (retrying forever), then hello, heartbeat, telemetry and command handling."""
        backoff = 0.2
        while True:
            client = self._client()
            try:
                uri = self._uri
                if self._password is not None:
                    uri = uri.replace("mqtt://", f"mqtt://{self.spec.uid}:{self._password}@")
                await client.connect(uri, cleansession=False)
                backoff = 0.2
                await self._session(client)
            except asyncio.CancelledError:
                await _quiet_disconnect(client)
                raise
            except Exception as exc:
                log.debug("sim node %s: %r; reconnecting", self.spec.uid, exc)
                await _quiet_disconnect(client)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _session(self, client: MQTTClient) -> None:
        spec = self.spec
        if spec.channels:
            await client.subscribe([(f"hydro/{self._gh}/{spec.zone_uid}/{spec.uid}/+/command", QOS_1)])
        hello = {
            "message_type": "node_hello",
            "hardware_id": spec.hardware_id,
            "node_type": spec.node_type,
            "fw_version": spec.fw_version,
            "hardware_revision": "rev-b",
            "node_uid": spec.uid,
            **spec.extra,
        }
        await client.publish(NODE_HELLO_TOPIC, json.dumps(hello).encode(), qos=QOS_1)
        await client.publish(
            status_topic(self._gh, spec.zone_uid, spec.uid), b'{"status":"online"}', qos=QOS_1, retain=True
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._telemetry_loop(client))
            tg.create_task(self._heartbeat_loop(client))
            if spec.channels:
                tg.create_task(self._command_loop(client))

    def _identity(self) -> dict[str, Any]:
        """The next (boot, seq) of this node."""
        seq, self._seq = self._seq, self._seq + 1
        return {"boot": self._boot, "seq": seq}

    async def _telemetry_loop(self, client: MQTTClient) -> None:
        topic = telemetry_topic(self._gh, self.spec.zone_uid, self.spec.uid)
        while True:
            values = self._readings()
            now = time.time()
            samples = [
                {"metric_type": m, "value": round(v, 3), "ts": round(now, 3)}
                for m in self.spec.metrics
                if (v := values.get(m)) is not None
            ]
            if samples:
                message = {"samples": samples, **self._identity()}
                await client.publish(topic, json.dumps(message).encode(), qos=QOS_1)
                _raise_if_cancelling()
                self.sent += len(samples)
            await asyncio.sleep(self._telemetry_s)

    async def _heartbeat_loop(self, client: MQTTClient) -> None:
        topic = heartbeat_topic(self._gh, self.spec.zone_uid, self.spec.uid)
        while True:
            hb = {"uptime_s": int(time.monotonic() - self._started), "rssi": -58, "free_heap": 182_000,
                  **self._identity()}
            await client.publish(topic, json.dumps(hb).encode(), qos=QOS_1)
            _raise_if_cancelling()
            await asyncio.sleep(self._heartbeat_s)

    async def _command_loop(self, client: MQTTClient) -> None:
        while True:
            message = await client.deliver_message()
            if message is None:
                _raise_if_cancelling()
                continue
            parts = message.topic.split("/")
            channel = parts[4] if len(parts) == 6 else "default"
            try:
                cmd = json.loads(bytes(message.data))
            except ValueError:
                continue
            resp_topic = command_response_topic(self._gh, self.spec.zone_uid, self.spec.uid, channel)
            base = {"cmd": cmd.get("cmd", ""), "cmd_id": cmd.get("cmd_id", "")}
            ack = {**base, "status": "ACK", **self._identity()}
            await client.publish(resp_topic, json.dumps(ack).encode(), qos=QOS_1)
            result = await self._on_command(channel, cmd) if self._on_command else {"status": "DONE"}
            await client.publish(resp_topic, json.dumps({**base, **result, **self._identity()}).encode(), qos=QOS_1)


def _raise_if_cancelling() -> None:
    """amqtt waits for PUBACK with ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation
    that arrives together with the PUBACK; re-raise it so the node task really stops."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _quiet_disconnect(client: MQTTClient) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), 2.0)
    except Exception:
        log.debug("sim node disconnect failed", exc_info=True)
