"""A node that keeps publishing telemetry across gateway restarts (paho reconnects by itself)."""

from __future__ import annotations

import json
import os
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, rate = int(sys.argv[1]), float(sys.argv[2])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nd-ph-1", clean_session=False)
    client.max_inflight_messages_set(200)
    client.reconnect_delay_set(0.05, 0.5)
    hello = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0"}
    client.on_connect = lambda c, *_: c.publish("hydro/node_hello", json.dumps(hello), qos=1)
    while True:
        try:
            client.connect("127.0.0.1", port, keepalive=5)
            break
        except OSError:
            time.sleep(0.05)
    client.loop_start()
    boot = f"p{os.getpid()}"
    i = 0
    while True:
        i += 1
        # With the message identity (one boot per publisher process): a resend after a lost PUBACK is stored once.
        sample = {"metric_type": "ec", "value": round(1.0 + (i % 1000) / 1000, 3), "ts": time.time(), "raw": {"i": i},
                  "boot": boot, "seq": i - 1}
        client.publish("hydro/gh1/zone-a/nd-ph-1/telemetry", json.dumps(sample), qos=1)
        time.sleep(1 / rate)


if __name__ == "__main__":
    main()
