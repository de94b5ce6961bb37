"""kill -9 of the whole gateway process while real QoS 1 nodes publish: no PUBACKed sample is ever lost.

The gateway runs as a real process (``python -m gateway run``); three paho nodes (persistent sessions, QoS 1,
each sample numbered and carrying the message identity boot/seq) publish without pause. The gateway is
SIGKILLed again and again, each time once it has acknowledged more samples since its start (progress is
observed, never guessed from the clock), then restarted. At the end every sample a node got a PUBACK for is in
SQLite, and thanks to the identity no sample is there twice, although paho re-sent every unacknowledged one.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port
from tests.e2e import gateway_proc

KILLS = 8
NODES = [("nd-a", "esp32-a1"), ("nd-b", "esp32-b1"), ("nd-c", "esp32-c1")]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(0.02)


class NumberedNode:
    """A paho node publishing numbered QoS 1 samples with (boot, seq); remembers what was PUBACKed."""

    def __init__(self, uid: str, hardware_id: str, port: int) -> None:
        self.uid = uid
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uid, clean_session=False)
        self.client.max_inflight_messages_set(20)
        self.client.reconnect_delay_set(0.05, 0.5)
        self._hello = {"message_type": "node_hello", "hardware_id": hardware_id, "node_type": "ph", "fw_version": "1"}
        self.port = port
        # Packet ids do not wrap (< 65535 messages per node here): sample number i went out as mids[i].
        self.mids: list[int] = []
        self._acked_mids: set[int] = set()
        self.client.on_publish = lambda _c, _u, mid, *_: self._acked_mids.add(mid)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.client.on_connect = lambda *_: self._connected.set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.client.connect_async("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        assert self._connected.wait(30), f"{self.uid} could not connect"
        hello = self.client.publish("hydro/node_hello", json.dumps(self._hello), qos=1)
        hello.wait_for_publish(30)  # registered (committed) before its first sample
        assert hello.is_published()
        self._thread.start()

    def _run(self) -> None:
        i = 0
        topic = f"hydro/gh1/zone-a/{self.uid}/telemetry"
        while not self._stop.is_set():
            sample = {"metric_type": "ec", "value": 1.0 + (i % 100) / 100, "raw": {"i": i}, "boot": "1", "seq": i}
            # Published while the gateway is down too: paho queues it and sends it after reconnecting.
            self.mids.append(self.client.publish(topic, json.dumps(sample), qos=1).mid)
            i += 1
            time.sleep(0.01)

    def acked(self) -> set[int]:
        acked = self._acked_mids
        return {i for i, mid in enumerate(list(self.mids)) if mid in acked}

    def stop_publishing(self) -> None:
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        self._stop.set()
        self.client.loop_stop()
        self.client.disconnect()


def _stored(db: Path) -> dict[str, list[int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT n.uid, s.raw FROM telemetry_samples s JOIN nodes n ON n.id = s.node_id").fetchall()
    out: dict[str, list[int]] = {}
    for uid, raw in rows:
        out.setdefault(uid, []).append(json.loads(raw)["i"])
    return out


@pytest.mark.slow
def test_sigkill_never_loses_a_pubacked_sample_and_resends_are_stored_once(tmp_path: Path) -> None:
    mqtt_port, http_port = free_port(), free_port()
    config = gateway_proc.write_config(tmp_path, gateway_id="gw-puback-k9", mqtt_port=mqtt_port, http_port=http_port,
                                       nodes=NODES)
    rng = random.Random(14)
    gw = gateway_proc.start(config)
    nodes = [NumberedNode(uid, hw, mqtt_port) for uid, hw in NODES]
    try:
        gateway_proc.wait_healthy(http_port, gw)
        for node in nodes:
            node.start()
        for _ in range(KILLS):
            if gw.poll() is not None:  # restarted after the previous kill
                gw = gateway_proc.start(config)
                gateway_proc.wait_healthy(http_port, gw)
            target = sum(len(n.acked()) for n in nodes) + 30 + rng.randrange(60)
            _wait(lambda t=target: sum(len(n.acked()) for n in nodes) >= t, 60, "the nodes got new PUBACKs")
            gateway_proc.kill9(gw)
        acked_at_last_kill = {n.uid: n.acked() for n in nodes}
        gw = gateway_proc.start(config)
        gateway_proc.wait_healthy(http_port, gw)
        for node in nodes:
            node.stop_publishing()
        # paho re-sends everything still unacknowledged (with DUP) until the gateway has committed it.
        _wait(lambda: all(len(n.acked()) == len(n.mids) for n in nodes), 90, "every sample PUBACKed")
        stored = _stored(tmp_path / "data" / "gateway.db")
        for node in nodes:
            numbers = stored.get(node.uid, [])
            assert acked_at_last_kill[node.uid] <= set(numbers), "a PUBACKed sample was lost"
            assert sorted(numbers) == list(range(len(node.mids))), "missing or duplicated samples"
        assert sum(len(a) for a in acked_at_last_kill.values()) > KILLS * 30
    finally:
        for node in nodes:
            node.close()
        gateway_proc.stop(gw)
