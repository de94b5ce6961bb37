"""A node publishing uniquely numbered QoS 1 samples; every number the gateway PUBACKed goes to a file.

``python acked_publisher.py PORT RATE ACK_FILE``: sample ``i`` carries ``raw = {"i": i}``; a line ``i`` is
appended to ACK_FILE when its PUBACK arrives (paho reconnects across gateway restarts by itself).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, rate, ack_path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nd-ph-1", clean_session=False)
    client.max_inflight_messages_set(200)
    client.reconnect_delay_set(0.05, 0.5)
    hello = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0"}
    pending: dict[int, int] = {}
    lock = threading.Lock()
    acks = open(ack_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the whole run

    early: set[int] = set()  # PUBACKs that arrived before publish() returned the mid to us

    def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with lock:  # never held around a paho call: paho calls this holding its own locks
            i = pending.pop(mid, None)
            if i is None:
                early.add(mid)
            else:
                acks.write(f"{i}\n")

    client.on_publish = on_publish
    client.on_connect = lambda c, *_: c.publish("hydro/node_hello", json.dumps(hello), qos=1)
    while True:
        try:
            client.connect("127.0.0.1", port, keepalive=5)
            break
        except OSError:
            time.sleep(0.05)
    client.loop_start()
    i = 0
    while True:
        i += 1
        sample = {"metric_type": "ec", "value": round(1.0 + (i % 1000) / 1000, 3), "ts": time.time(), "raw": {"i": i}}
        info = client.publish("hydro/gh1/zone-a/nd-ph-1/telemetry", json.dumps(sample), qos=1)
        with lock:
            if info.mid in early:
                early.discard(info.mid)
                acks.write(f"{i}\n")
            else:
                pending[info.mid] = i
        time.sleep(1 / rate)


if __name__ == "__main__":
    main()
