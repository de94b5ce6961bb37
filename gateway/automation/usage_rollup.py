"""Daily water usage (seed 003 §15): ``water_usage_logs`` → ``water_usage_daily`` in the greenhouse's local dates.

Incremental and idempotent: the logs inserted since ``aggregator_state('water_usage').last_id`` name
the (zone, local date) pairs they touch; each pair is recomputed from all its logs with the pure
``gateway.water.usage.rollup_daily`` (a run across midnight splits its volume by time and counts as
one irrigation on the day it started) and written with INSERT OR REPLACE.

A run counts as an irrigation when its ``details`` say ``{"kind": "irrigation"}`` or its pump channel
is one of the zone's irrigation channels; recirculation, drain and fill runs only add volume.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta, tzinfo
from typing import Any

from gateway.automation.aggregate import local_date, local_day_bounds
from gateway.clock import Clock
from gateway.store.db import Database
from gateway.water.usage import UsageRun, rollup_daily

NAME = "water_usage"
MAX_RUN_S = 86_400.0  # runs are looked up by start time; none lasts longer than this


class UsageRollup:
    """Keeps ``water_usage_daily`` up to date."""

    def __init__(self, db: Database, clock: Clock, tz: tzinfo,
                 irrigation_channels: Mapping[int, frozenset[str]] | None = None) -> None:
        self._db = db
        self._clock = clock
        self._tz = tz
        self._irrigation = dict(irrigation_channels or {})

    def set_irrigation_channels(self, channels: Mapping[int, frozenset[str]]) -> None:
        """Zone id → its irrigation pump channels (from the zones' actuators)."""
        self._irrigation = dict(channels)

    async def run_once(self) -> int:
        """Recompute the (zone, date) rows touched by new logs; returns how many rows were written."""
        row = await self._db.fetchone("SELECT last_id FROM aggregator_state WHERE name=?", (NAME,))
        last_id = 0 if row is None else int(row["last_id"])
        new = await self._db.fetchall(
            "SELECT id, zone_id, started_at, finished_at FROM water_usage_logs WHERE id > ? ORDER BY id", (last_id,))
        if not new:
            return 0
        touched: set[tuple[int, date]] = set()
        for r in new:
            day, last_day = local_date(r["started_at"], self._tz), local_date(r["finished_at"], self._tz)
            while day <= last_day:
                touched.add((int(r["zone_id"]), day))
                day += timedelta(days=1)
        written = 0
        async with self._db.transaction() as conn:
            for zone_id, day in sorted(touched):
                start, end = local_day_bounds(day, self._tz)
                async with conn.execute(
                    "SELECT zone_id, pump_channel, started_at, finished_at, volume_l, details FROM water_usage_logs"
                    " WHERE zone_id=? AND started_at >= ? AND started_at < ?",
                    (zone_id, start - MAX_RUN_S, end)) as cur:
                    runs = [self._run(r) for r in await cur.fetchall() if r["finished_at"] >= start]
                for daily in rollup_daily(runs, self._tz):
                    if daily.date == day:
                        await conn.execute(
                            "INSERT OR REPLACE INTO water_usage_daily(date, zone_id, total_volume_l, irrigation_count)"
                            " VALUES (?,?,?,?)",
                            (day.isoformat(), zone_id, round(daily.total_volume_l, 6), daily.irrigation_count))
                        written += 1
            await conn.execute(
                "INSERT INTO aggregator_state(name, last_id, runs, updated_at) VALUES (?,?,1,?)"
                " ON CONFLICT(name) DO UPDATE SET last_id=excluded.last_id, runs=runs+1,"
                " updated_at=excluded.updated_at",
                (NAME, int(new[-1]["id"]), self._clock.time()))
        return written

    def _run(self, r: Any) -> UsageRun:
        zone_id = int(r["zone_id"])
        try:
            details = json.loads(r["details"] or "{}")
        except ValueError:
            details = {}
        kind = details.get("kind") if isinstance(details, dict) else None
        irrigation = kind == "irrigation" or str(r["pump_channel"]) in self._irrigation.get(zone_id, frozenset())
        return UsageRun(zone_id, str(r["pump_channel"]), float(r["started_at"]), float(r["finished_at"]),
                        float(r["volume_l"]), irrigation=irrigation)
