"""Daily water usage from water_usage_logs: local dates, runs across midnight, idempotent and incremental."""

from __future__ import annotations

import json
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.automation.usage_rollup import UsageRollup
from gateway.clock import ManualClock
from gateway.store.db import Database

BERLIN = ZoneInfo("Europe/Berlin")


def _at(d: date, hh: int, mm: int = 0) -> float:
    return datetime.combine(d, time(hh, mm), BERLIN).timestamp()


async def _log(db: Database, zone_id: int, channel: str, start: float, end: float, litres: float,
               kind: str | None = None) -> None:
    await db.execute(
        "INSERT INTO water_usage_logs(zone_id, pump_channel, volume_l, duration_ms, details, started_at, finished_at)"
        " VALUES (?,?,?,?,?,?,?)",
        (zone_id, channel, litres, int((end - start) * 1000), json.dumps({"kind": kind} if kind else {}), start, end))


async def _daily(db: Database) -> list[tuple[str, int, float, int]]:
    rows = await db.fetchall("SELECT * FROM water_usage_daily ORDER BY date, zone_id")
    return [(r["date"], r["zone_id"], round(r["total_volume_l"], 6), r["irrigation_count"]) for r in rows]


async def test_rollup_by_local_date_idempotent_and_incremental(tmp_path: Path) -> None:
    db = Database(tmp_path / "gw.db")
    await db.open()
    d1, d2 = date(2026, 3, 28), date(2026, 3, 29)
    rollup = UsageRollup(db, ManualClock(), BERLIN, {1: frozenset({"pump_irr"})})
    await _log(db, 1, "pump_irr", _at(d1, 8), _at(d1, 8, 2), 4.0)
    await _log(db, 1, "pump_recirc", _at(d1, 9), _at(d1, 10), 720.0)  # recirculation: volume, no irrigation
    await _log(db, 2, "drip", _at(d1, 12), _at(d1, 12, 5), 3.0, kind="irrigation")
    # 23:30 → 00:30 local: the volume splits by time (this is UTC 22:30 → 23:30, all on one UTC date).
    await _log(db, 1, "pump_irr", _at(d1, 23, 30), _at(d2, 0, 30), 10.0)
    assert await rollup.run_once() == 3
    want = [("2026-03-28", 1, 729.0, 2), ("2026-03-28", 2, 3.0, 1), ("2026-03-29", 1, 5.0, 0)]
    assert await _daily(db) == want
    assert await rollup.run_once() == 0 and await _daily(db) == want  # nothing new: nothing changes
    # A new log on day 2 recomputes that day from all its logs, including the run from the night before.
    await _log(db, 1, "pump_irr", _at(d2, 8), _at(d2, 8, 1), 2.0)
    assert await rollup.run_once() == 1
    assert (await _daily(db))[-1] == ("2026-03-29", 1, 7.0, 1)
    # Rebuilding from scratch gives the same rows.
    await db.execute("DELETE FROM water_usage_daily")
    await db.execute("DELETE FROM aggregator_state WHERE name='water_usage'")
    await rollup.run_once()
    assert await _daily(db) == [*want[:2], ("2026-03-29", 1, 7.0, 1)]
    state = await db.fetchone("SELECT last_id FROM aggregator_state WHERE name='water_usage'")
    assert state is not None and state["last_id"] == 5
    await db.close()


@pytest.mark.parametrize("tz_name", ["UTC", "America/New_York"])
async def test_local_date_depends_on_the_greenhouse_timezone(tmp_path: Path, tz_name: str) -> None:
    db = Database(tmp_path / "gw.db")
    await db.open()
    ts = datetime(2026, 7, 1, 2, 0, tzinfo=ZoneInfo("UTC")).timestamp()  # 22:00 on June 30th in New York
    await _log(db, 1, "pump_irr", ts, ts + 60, 1.5, kind="irrigation")
    await UsageRollup(db, ManualClock(), ZoneInfo(tz_name)).run_once()
    assert (await _daily(db))[0][0] == ("2026-07-01" if tz_name == "UTC" else "2026-06-30")
    await db.close()
