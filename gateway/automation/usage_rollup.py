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

from gateway.automation.aggregate import local_date, local_day_bounds
from gateway.clock import Clock
from gateway.store import aggregates, water
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
        new = await water.runs_after(self._db, await aggregates.last_id(self._db, NAME))
        if not new:
            return 0
        touched: set[tuple[int, date]] = set()
        for r in new:
            day, last_day = local_date(r.started_at, self._tz), local_date(r.finished_at, self._tz)
            while day <= last_day:
                touched.add((r.zone_id, day))
                day += timedelta(days=1)
        written = 0
        async with self._db.transaction() as conn:
            for zone_id, day in sorted(touched):
                start, end = local_day_bounds(day, self._tz)
                stored = await water.runs_started(conn, zone_id, start - MAX_RUN_S, end)
                runs = [self._run(r) for r in stored if r.finished_at >= start]
                for daily in rollup_daily(runs, self._tz):
                    if daily.date == day:
                        await water.put_daily(conn, day.isoformat(), zone_id, round(daily.total_volume_l, 6),
                                              daily.irrigation_count)
                        written += 1
            await aggregates.save_progress(conn, NAME, new[-1].id, self._clock.time())
        return written

    def _run(self, r: water.RunRow) -> UsageRun:
        try:
            details = json.loads(r.details or "{}")
        except ValueError:
            details = {}
        kind = details.get("kind") if isinstance(details, dict) else None
        irrigation = kind == "irrigation" or r.pump_channel in self._irrigation.get(r.zone_id, frozenset())
        return UsageRun(r.zone_id, r.pump_channel, r.started_at, r.finished_at, r.volume_l, irrigation=irrigation)
