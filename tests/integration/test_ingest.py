"""Telemetry ingest: timestamps, clock sync flag, clean-shutdown flush, commit retry without loss."""

from __future__ import annotations

import asyncio
import time

from gateway.clock import ManualClock
from gateway.ingest import SampleIn
from gateway.store.db import Database
from gateway.telemetry_metrics import Metric
from gateway.timesync import ClockSyncProbe
from tests.conftest import eventually, run_gateway
from tests.fakes.paho_node import PahoNode

HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"}


async def _hello(gw) -> PahoNode:
    node = PahoNode("nd-ph-1", gw.services.broker.port)
    await asyncio.to_thread(node.connect)
    await asyncio.to_thread(node.publish, "hydro/node_hello", HELLO)
    await eventually(lambda: gw.services.registry.get("nd-ph-1"))
    return node


async def test_node_clock_kept_unless_absurd(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = await _hello(gw)
        now = time.time()
        samples = [
            SampleIn("nd-ph-1", "ph", 6.0, ts=now - 60),  # a minute old: kept
            SampleIn("nd-ph-1", "ph", 6.1, ts=1000.0),  # unset RTC (1970): flagged
            SampleIn("nd-ph-1", "ph", 6.2, ts=now + 3600),  # an hour in the future: flagged
            SampleIn("nd-ph-1", "ph", 6.3, ts=(now - 5) * 1000),  # milliseconds: converted
            SampleIn("nd-ph-1", "ph", 6.4, ts="2026-01-02T03:04:05Z"),  # RFC 3339
        ]
        result = await gw.services.ingest.accept(samples, source="test")
        assert result.accepted == 5
        rows = await eventually(lambda: _rows(gw, 5))
        by_value = {r["value"]: r for r in rows}
        assert by_value[6.0]["ts"] == now - 60 and by_value[6.0]["ts_source"] == "node"
        for v in (6.1, 6.2):
            assert by_value[v]["ts_source"] == "gateway_absurd_ts"
            assert abs(by_value[v]["ts"] - by_value[v]["received_at"]) < 1e-6
        assert abs(by_value[6.3]["ts"] - (now - 5)) < 0.01
        assert by_value[6.4]["ts"] == 1767323045.0
        assert all(r["clock_synced"] == 1 for r in rows)  # demo mode trusts the clock
        node.close()


async def test_clean_shutdown_flushes_the_pending_batch(make_settings, tmp_path):
    settings = make_settings(ingest={"flush_interval_ms": 600_000, "batch_size": 10_000})
    async with run_gateway(settings) as gw:
        node = await _hello(gw)
        batch = [{"metric_type": "ec", "value": 1.0 + i / 100, "ts": time.time()} for i in range(50)]
        await asyncio.to_thread(node.publish, "hydro/gh1/zone-a/nd-ph-1/telemetry", batch)
        await eventually(lambda: gw.services.writer.depth == 50)
        assert (await gw.services.db.fetchone("SELECT COUNT(*) FROM telemetry_samples"))[0] == 0
        node.close()
    db = Database(settings.db_path)
    await db.open()
    try:
        assert (await db.fetchone("SELECT COUNT(*) FROM telemetry_samples"))[0] == 50
    finally:
        await db.close()


async def test_failed_commit_keeps_rows_and_retries(make_settings):
    async with run_gateway(make_settings()) as gw:
        await _hello(gw)
        # Make every insert fail, as a full disk would, then heal it.
        await gw.services.db.execute("CREATE TEMP TRIGGER full_disk BEFORE INSERT ON telemetry_samples "
                            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        await gw.services.ingest.accept([SampleIn("nd-ph-1", "ph", 5.5, ts=time.time())], source="test")
        await eventually(lambda: gw.services.writer.last_commit_error is not None)
        await gw.services.db.execute("DROP TRIGGER full_disk")
        await eventually(lambda: gw.services.writer.last_commit_error is None, timeout=5)
        rows = await gw.services.db.fetchall("SELECT value FROM telemetry_samples")
        assert [r[0] for r in rows] == [5.5]


def test_clock_sync_probe_reads_timesyncd_flag(tmp_path, monkeypatch):
    import gateway.timesync as ts

    flag = tmp_path / "synchronized"
    monkeypatch.setattr(ts, "TIMESYNC_FLAG", flag)
    clock = ManualClock()
    probe = ClockSyncProbe(clock.monotonic, ttl_s=10)
    assert probe.synced() is False
    flag.touch()
    assert probe.synced() is False  # cached
    clock._elapsed += 11
    assert probe.synced() is True
    assert ClockSyncProbe(clock.monotonic, assume_synced=True).synced() is True


async def _rows(gw, n):
    rows = await gw.services.db.fetchall("SELECT * FROM telemetry_samples ORDER BY id")
    return rows if len(rows) >= n else None


async def test_reading_age_counts_from_the_measurement_when_the_clock_is_synced(make_settings):
    async with run_gateway(make_settings()) as gw:
        node = await _hello(gw)
        zone_id = gw.services.registry.get("nd-ph-1").zone_id
        now = time.time()
        # A level measured two hours ago, delivered now (a node emptying its buffer after an outage).
        await gw.services.ingest.accept([SampleIn("nd-ph-1", "water_level", 85.0, ts=now - 7200)], source="test")
        reading = gw.services.latest.get(zone_id, Metric.WATER_LEVEL)
        assert reading is not None
        age = gw.services.latest.age(zone_id, Metric.WATER_LEVEL, gw.services.clock.monotonic())
        assert age is not None and age >= 7200 - 5  # two hours old, not fresh
        # No timestamp: the receipt is the best we know.
        await gw.services.ingest.accept([SampleIn("nd-ph-1", "water_level", 80.0)], source="test")
        age = gw.services.latest.age(zone_id, Metric.WATER_LEVEL, gw.services.clock.monotonic())
        assert age is not None and age < 60
        node.close()
