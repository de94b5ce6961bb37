"""Repeated bad input from a real MQTT node: each kind of complaint is logged about once, never once per message."""

from __future__ import annotations

import asyncio
import collections
import json
import logging

from tests.conftest import eventually, run_gateway
from tests.integration.web.conftest import HELLOS

REPEATS = 300


async def test_every_repeated_complaint_is_rate_limited(make_settings, nodes, caplog):
    caplog.set_level(logging.INFO)
    async with run_gateway(make_settings()) as gw, nodes(gw, "nd-ph-1") as by_uid:
        node = by_uid["nd-ph-1"]
        base = "hydro/gh1/zone-a/nd-ph-1"
        hello = json.dumps({"message_type": "node_hello", **HELLOS["nd-ph-1"]})
        heartbeat = json.dumps({"message_type": "heartbeat", "uptime_s": 5, "rssi": -60, "free_heap": 1000})
        processed = gw.services.router.processed
        caplog.clear()

        def flood(messages: list[tuple[str, bytes | str]]) -> None:
            infos = [node.client.publish(topic, body, qos=1) for _ in range(REPEATS) for topic, body in messages]
            for info in infos:
                info.wait_for_publish(60.0)

        writable = [
            ("hydro/node_hello", hello),  # a node rebooting in a loop
            (f"{base}/telemetry", b"{not json"),
            (f"{base}/telemetry", json.dumps([{"metric_type": f"zz{i}", "value": 1} for i in range(20)])),
            (f"{base}/telemetry", json.dumps({"metric_type": "ph", "value": 99})),
            ("hydro/gh1/zone-a/nd-ghost/telemetry", json.dumps({"metric_type": "ph", "value": 6})),
        ]
        await asyncio.to_thread(flood, writable)
        await eventually(lambda: gw.services.router.processed >= processed + len(writable) * REPEATS, timeout=60)
        await gw.services.db.fetchone("PRAGMA query_only = 1")  # every write fails from here on (a broken disk)
        try:
            # Nothing that cannot be stored is acknowledged (the gateway ends the connection, the node re-sends):
            # publish without waiting for PUBACKs and let the gateway fail on them for a while.
            broken = [(f"{base}/heartbeat", heartbeat), ("hydro/node_hello", hello)]
            failed = gw.services.metrics.messages_rejected.labels(reason="storage_error")
            before = failed._value.get()
            await asyncio.to_thread(
                lambda: [node.client.publish(t, b, qos=1) for _ in range(REPEATS) for t, b in broken]
            )
            await eventually(lambda: failed._value.get() >= before + 20, timeout=60)
        finally:
            await gw.services.db.fetchone("PRAGMA query_only = 0")
    # One key per complaint: logger, template and its first arguments (source/node/reason), not the detail.
    lines = collections.Counter(
        (r.name, r.msg, str(r.args[:2] if isinstance(r.args, tuple) else r.args))
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name.startswith("gateway")
    )
    noisy = {k: n for k, n in lines.items() if n > 2}
    assert noisy == {}, noisy
    assert sum(lines.values()) < 40, lines
