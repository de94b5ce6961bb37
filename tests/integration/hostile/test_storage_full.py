"""SQLite refusing writes (SQLITE_FULL via max_page_count, no root needed): alerts from memory, no crash, gap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time

from gateway.compose import build_gateway
from tests.conftest import eventually, run_gateway
from tests.integration.web.conftest import BEARER


async def _limit_pages(gw, extra: int | None) -> None:
    """Let the database grow by ``extra`` pages from now on (None: no limit), as a full disk would."""
    pages = (await gw.services.db.fetchone("PRAGMA page_count"))[0]
    await gw.services.db.fetchone(f"PRAGMA max_page_count = {pages + extra if extra is not None else 1_000_000_000}")


async def test_sqlite_full_keeps_alerts_in_memory_and_records_the_gap(make_settings, client, nodes):
    settings = make_settings(storage={"poll_s": 0.1, "reserve_bytes": 0}, automation={"aggregate_interval_s": 0.2})
    async with run_gateway(settings) as gw, nodes(gw, "nd-ph-1") as by_uid, client(gw) as c:
        node = by_uid["nd-ph-1"]
        topic = "hydro/gh1/zone-a/nd-ph-1/telemetry"
        await asyncio.to_thread(node.publish, topic, {"metric_type": "ph", "value": 6.1, "ts": time.time()})
        await eventually(lambda: gw.services.writer.committed == 1)
        await _limit_pages(gw, 0)
        batch = [{"metric_type": "ph", "value": 6.2, "ts": time.time()}] * 500
        # Not acknowledged while they cannot be committed (PUBACK after commit): published without waiting.
        unacked = [node.client.publish(topic, json.dumps(batch).encode(), qos=1) for _ in range(4)]
        # Full: alerted (the alert row still fits in a page with room), status and /healthz say so.
        async def active(code: str) -> dict | None:
            return {a["code"]: a for a in (await c.get("/api/alerts")).json()["active"]}.get(code)

        assert (await eventually(lambda: active("infra_disk_full")))["severity"] == "critical"
        # Now no write at all succeeds: a new alert (a spoofed hello) is shown from memory.
        await gw.services.db.fetchone("PRAGMA query_only = 1")
        spoof = {"message_type": "node_hello", "hardware_id": "esp32-zz99", "node_type": "ph", "fw_version": "6.6.6",
                 "node_uid": "nd-ph-1"}
        await asyncio.to_thread(node.publish, "hydro/node_hello", spoof)

        held = await eventually(lambda: active("infra_node_identity_conflict"))
        assert held["stored"] is False and held["id"] < 0
        status = (await c.get("/api/status")).json()
        assert status["storage_level"] == "full" and status["storage"]["unstored_alerts"] >= 1
        health = await c.get("/healthz")
        assert health.status == 503 and health.json()["storage_level"] == "full"
        # Services keep running through failing writes: aggregation retries, a hello is refused cleanly,
        # REST ingest still answers.
        assert status["storage"]["unstored_alerts"] >= 1
        await asyncio.sleep(1.0)
        resp = await c.post("/ingest/telemetry", json={"samples": [{"node_uid": "nd-ph-1", "metric_type": "ph",
                                                                    "value": 6.3}]}, headers=BEARER)
        # Accepted and queued, but not committed: no 2xx (it is committed once space returns).
        assert resp.status == 503 and resp.json()["error"] == "not_committed"
        assert not any(info.is_published() for info in unacked)
        assert (await c.get("/api/overview")).status == 200
        # Space returns: the waiting samples are committed, the alerts are written, the gap recorded.
        await gw.services.db.fetchone("PRAGMA query_only = 0")
        await _limit_pages(gw, None)
        await eventually(lambda: not gw.services.storage.full and gw.services.storage.gaps_recorded == 1, timeout=20)
        await eventually(lambda: gw.services.writer.committed == 2002 and gw.services.writer.depth == 0)
        await eventually(lambda: all(info.is_published() for info in unacked))  # PUBACKed once committed
        gap = await gw.services.db.fetchone("SELECT * FROM sync_gaps WHERE reason='disk_full'")
        assert gap is not None and gap["last_ts"] > gap["first_ts"]
        event = await gw.services.db.fetchone("SELECT body FROM sync_outbox WHERE stream='zone_events'")
        assert '"TELEMETRY_GAP"' in event["body"] and '"disk_full"' in event["body"]
        await eventually(lambda: gw.services.alerts.unstored == 0)
        resolved = "SELECT 1 FROM alerts WHERE code='infra_disk_full' AND status='RESOLVED' AND resolved_by=?"
        await eventually(lambda: gw.services.db.fetchone(resolved, ("storage recovered",)))
        conflict = await gw.services.db.fetchone("SELECT status FROM alerts WHERE code='infra_node_identity_conflict'")
        assert conflict["status"] == "ACTIVE"
        assert (await c.get("/healthz")).status == 200


async def test_a_service_hitting_sqlite_errors_is_restarted_in_place_not_the_process(make_settings, caplog):
    runs = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise sqlite3.OperationalError("database or disk is full")
        if runs == 2:  # as a TaskGroup inside a service reports it
            raise ExceptionGroup("tg", [sqlite3.OperationalError("disk I/O error")])
        recovered.set()
        await asyncio.Event().wait()

    gw = await build_gateway(make_settings())
    gw.add_service("flaky", flaky)
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(recovered.wait(), 20)
        assert not task.done()
        assert gw.services.metrics.service_storage_restarts.labels(service="flaky")._value.get() == 2
        lines = [r.getMessage() for r in caplog.records if "flaky" in r.getMessage()]
        assert len([m for m in lines if "storage error" in m]) == 1, lines  # logged once, not per restart
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
