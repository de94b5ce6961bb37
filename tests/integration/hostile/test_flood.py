"""One node flooding unknown metrics must not hold up another node's samples (real broker, real paho nodes)."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time

from tests.conftest import eventually, run_gateway
from tests.fakes.paho_node import PahoNode
from tests.integration.web.conftest import HELLOS

MESSAGES, NAMES = 300, 100


async def _hello(gw, uid: str) -> PahoNode:
    node = PahoNode(uid, gw.services.broker.port)
    await asyncio.to_thread(node.connect)
    await asyncio.to_thread(node.publish, "hydro/node_hello", {"message_type": "node_hello", **HELLOS[uid]})
    await eventually(lambda: gw.services.registry.get(uid))
    return node


async def test_unknown_metric_flood_costs_one_alert_write_and_does_not_delay_another_node(make_settings, capsys):
    async with run_gateway(make_settings()) as gw:
        noisy, victim = await _hello(gw, "nd-ph-1"), await _hello(gw, "nd-ph-2")
        victim_id = gw.services.registry.get("nd-ph-2").id
        sent: dict[int, float] = {}
        stop = threading.Event()

        def victim_loop() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                sent[i] = time.time()
                victim.publish("hydro/gh1/zone-b/nd-ph-2/telemetry",
                               {"metric_type": "ph", "value": 6.0, "ts": sent[i], "raw": {"i": i}}, qos=0)
                time.sleep(0.05)

        def flood() -> None:
            infos = []
            for m in range(MESSAGES):
                body = [{"metric_type": f"bogus_{m}_{k}", "value": k} for k in range(NAMES)]
                infos.append(noisy.client.publish("hydro/gh1/zone-a/nd-ph-1/telemetry", json.dumps(body), qos=1))
            for info in infos:
                info.wait_for_publish(60.0)

        seen: dict[int, float] = {}

        async def watch() -> None:  # when each victim sample becomes visible in SQLite (committed)
            while True:
                rows = await gw.services.db.fetchall(
                    "SELECT raw FROM telemetry_samples WHERE node_id=? ORDER BY id DESC LIMIT 50", (victim_id,))
                now = time.time()
                for r in rows:
                    seen.setdefault(json.loads(r["raw"])["i"], now)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        thread = threading.Thread(target=victim_loop)
        thread.start()
        try:
            await asyncio.sleep(1.0)
            flood_started = time.time()
            await asyncio.to_thread(flood)
            rejected = gw.services.metrics.ingest_samples.labels(result="rejected", reason="unknown_metric")
            await eventually(lambda: rejected._value.get() == MESSAGES * NAMES, timeout=60)
            flood_done = time.time()
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
        await eventually(lambda: len(seen) >= len(sent) - 1, timeout=30)
        watcher.cancel()
        during = [seen[i] - sent[i] for i in sent if i in seen and flood_started <= sent[i] <= flood_done]
        quiet = [seen[i] - sent[i] for i in sent if i in seen and sent[i] < flood_started]
        with capsys.disabled():
            print(f"\nflood {MESSAGES}x{NAMES} unknown metrics took {flood_done - flood_started:.2f} s; other node's "
                  f"commit delay during it: median {statistics.median(during) * 1000:.0f} ms, "
                  f"max {max(during) * 1000:.0f} ms over {len(during)} samples (before: median "
                  f"{statistics.median(quiet) * 1000:.0f} ms)")
        assert during, "no sample of the other node was sent during the flood"
        # Every sample of the quiet node arrived; the flood wrote ONE alert (one transaction), not 30,000.
        assert len(seen) >= len(sent) - 1
        alerts = [a for a in await gw.services.alerts.active() if a["code"] == "unknown_metric"]
        assert [(a["scope"], a["count"]) for a in alerts] == [("nd-ph-1", 1)]
        assert gw.services.metrics.alerts_raised.labels(code="unknown_metric")._value.get() == 1
        outbox = await gw.services.db.fetchone("SELECT COUNT(*) FROM sync_outbox WHERE stream='alerts'")
        assert outbox[0] == 1
        noisy.close()
        victim.close()
