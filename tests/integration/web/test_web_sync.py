"""Sync backlog and lag on the page, in the API and in /metrics while the central system is unreachable."""

from __future__ import annotations

import re
import time

from tests.conftest import ADMIN_TOKEN, eventually, free_port, run_gateway

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_offline_uplink_shows_backlog_lag_and_unreachable(make_settings, client, nodes):
    # Yesterday: telemetry buffered on a gateway without upstream.
    async with run_gateway(make_settings()) as gw, nodes(gw, "nd-ph-1"), client(gw) as c:
        now = time.time()
        samples = [{"node_uid": "nd-ph-1", "metric_type": "ph", "value": 6.0, "ts": now - 5 + i} for i in range(5)]
        assert (await c.post("/ingest/telemetry", json={"samples": samples}, headers=BEARER)).status == 200
        await eventually(lambda: _count(gw, 5))
    # Today: an upstream is configured, but nothing listens there: the central system is down.
    upstream = {"url": f"http://127.0.0.1:{free_port()}", "token": "upstream-token", "unreachable_alert_after_s": 0}
    async with run_gateway(make_settings(upstream=upstream)) as gw, client(gw) as c:

        async def telemetry() -> dict | None:
            sync = (await c.get("/api/overview")).json()["sync"]
            st = next((s for s in sync["streams"] if s["stream"] == "telemetry"), None)
            unreachable = (sync["upstream"] or {}).get("unreachable")
            return {**st, "sync": sync} if st and st["backlog_rows"] == 5 and unreachable else None

        st = await eventually(telemetry, timeout=15)
        assert st["sync"]["available"] is True and st["last_error"]
        assert st["lag_s"] is not None and 0 < st["lag_s"] < 60
        page = (await c.get("/")).text
        assert '<td data-label="Stream">telemetry</td>' in page and "5 rows" in page
        assert "Central system unreachable" in page
        alerts = (await c.get("/api/alerts")).json()["active"]
        assert "infra_upstream_unreachable" in [a["code"] for a in alerts]

        async def scraped() -> str | None:
            text = (await c.get("/metrics")).text
            found = re.search(r'^hydro_sync_backlog_rows\{stream="telemetry"\} 5\.0$', text, re.MULTILINE)
            return text if found else None

        text = await eventually(scraped, timeout=10)  # the gateway's housekeeping copies it every 5 s
        lag = re.search(r'^hydro_sync_lag_seconds\{stream="telemetry"\} (\S+)$', text, re.MULTILINE)
        assert lag and float(lag.group(1)) > 0


async def _count(gw, n: int) -> bool:
    row = await gw.services.db.fetchone("SELECT COUNT(*) FROM telemetry_samples")
    return row is not None and row[0] >= n
