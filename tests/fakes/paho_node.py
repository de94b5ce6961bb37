"""A real MQTT node for tests: paho-mqtt (its own network thread, as on a separate device)."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def release_sockets(client: mqtt.Client) -> None:
    """Close the sockets paho still holds after ``loop_stop()``.

    paho closes the wake-up socketpair that ``loop_start()`` created only when the client is garbage
    collected; our nodes sit in a reference cycle with their client (bound callbacks), so that happens in
    a later collection pass, as an "unclosed socket" ResourceWarning. paho has no public call for it.
    """
    client._reset_sockets()


class PahoNode:
    """Connects to the gateway's broker and records what it receives."""

    def __init__(
        self,
        client_id: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
        keepalive: int = 30,
        will: tuple[str, bytes] | None = None,
        protocol: int = mqtt.MQTTv311,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=protocol
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.port = port
        self.keepalive = keepalive
        self.received: queue.Queue[tuple[str, bytes, bool, int]] = queue.Queue()
        self.connack: queue.Queue[tuple[Any, bool]] = queue.Queue()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self._lock = threading.Lock()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.received.put((msg.topic, msg.payload, bool(msg.retain), msg.qos))

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.connack.put((reason, bool(flags.session_present)))

    def connect(self, timeout: float = 5.0) -> tuple[Any, bool]:
        """Connect and wait for CONNACK; returns (reason code, session_present)."""
        self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.client.loop_start()
        return self.connack.get(timeout=timeout)

    def publish(self, topic: str, payload: Any, qos: int = 1, retain: bool = False) -> None:
        """Publish (dicts/lists as JSON) and wait for the PUBACK at QoS 1."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(5.0)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe (returns once SUBACK arrived)."""
        self.client.subscribe(topic, qos)
        time.sleep(0.2)

    def get(self, timeout: float = 5.0) -> tuple[str, bytes, bool, int]:
        """Next received message."""
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        """Disconnect cleanly."""
        self.client.disconnect()
        self.client.loop_stop()
        release_sockets(self.client)

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT (power loss)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        release_sockets(self.client)
