"""Water usage from flow samples (seed 003 §15): per-run volume and the daily rollup, pure.

Volumes are the trapezoidal integral of flow (L/min) over time (s). Samples further apart than
``max_gap_s`` are not bridged: the stretch is reported as a gap and left out, because guessing
through a sensor outage would invent water. Edges of the window not covered by a sample on both
sides are extrapolated with the nearest sample's value when they are no longer than ``max_gap_s``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo


@dataclass(frozen=True)
class Gap:
    """A stretch of the window with no usable flow data (seconds, same clock as the samples)."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        """Length of the gap."""
        return self.end - self.start


@dataclass(frozen=True)
class UsageSummary:
    """Volume of one run and how much of it the data covered."""

    volume_l: float
    duration_ms: int
    avg_flow_l_min: float | None  # over the covered time; None when nothing was covered
    covered_s: float
    gaps: tuple[Gap, ...]
    sample_count: int


class _Acc:
    """Running volume, covered time and gaps while walking the samples."""

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.volume = 0.0
        self.covered = 0.0
        self.gaps: list[Gap] = []

    def add(self, a: float, b: float, fa: float, fb: float) -> None:
        self.volume += (fa + fb) / 2 * (b - a) / 60
        self.covered += b - a

    def edge(self, a: float, b: float, flow: float, reach: float) -> None:
        """Hold ``flow`` over [a, b] if the farthest point is within ``max_gap_s`` of the sample."""
        if b <= a:
            return
        if reach <= self.max_gap_s:
            self.add(a, b, flow, flow)
        else:
            self.gaps.append(Gap(a, b))


def integrate_volume(
    samples: Sequence[tuple[float, float]], start: float, end: float, *, max_gap_s: float = 30.0
) -> UsageSummary:
    """Litres that flowed in ``[start, end]`` from ``(ts_seconds, flow_l_min)`` samples."""
    if end < start:
        raise ValueError("end must not be before start")
    by_ts: dict[float, float] = {}
    for ts, flow in samples:  # later duplicates win; non-finite samples are unavailable, not 0
        if math.isfinite(ts) and math.isfinite(flow):
            by_ts[ts] = max(flow, 0.0)
    pts = sorted(by_ts.items())
    acc = _Acc(max_gap_s)
    if not pts:
        if end > start:
            acc.gaps.append(Gap(start, end))
    else:
        (first_ts, first_flow), (last_ts, last_flow) = pts[0], pts[-1]
        acc.edge(start, min(first_ts, end), first_flow, reach=first_ts - start)
        for (ta, fa), (tb, fb) in itertools.pairwise(pts):
            a, b = max(ta, start), min(tb, end)
            if b <= a:
                continue
            if tb - ta > max_gap_s:
                acc.gaps.append(Gap(a, b))
            else:
                acc.add(a, b, _lerp(ta, fa, tb, fb, a), _lerp(ta, fa, tb, fb, b))
        acc.edge(max(last_ts, start), end, last_flow, reach=end - last_ts)
    return UsageSummary(
        volume_l=acc.volume,
        duration_ms=round((end - start) * 1000),
        avg_flow_l_min=acc.volume / (acc.covered / 60) if acc.covered > 0 else None,
        covered_s=acc.covered,
        gaps=tuple(acc.gaps),
        sample_count=sum(1 for ts, _ in pts if start <= ts <= end),
    )


def _lerp(ta: float, fa: float, tb: float, fb: float, t: float) -> float:
    return fa + (fb - fa) * (t - ta) / (tb - ta)


@dataclass(frozen=True)
class UsageRun:
    """One logged pump run (``water_usage_logs`` row), wall-clock seconds."""

    zone_id: int | str
    pump_channel: str
    started_at: float
    finished_at: float
    volume_l: float
    irrigation: bool = True  # counts towards irrigation_count (recirculation runs do not)


@dataclass(frozen=True)
class DailyUsage:
    """One ``water_usage_daily`` row."""

    date: date
    zone_id: int | str
    total_volume_l: float
    irrigation_count: int


def rollup_daily(runs: Iterable[UsageRun], tz: tzinfo) -> list[DailyUsage]:
    """Daily totals per zone in local days of ``tz``, sorted by (date, zone).

    A run crossing midnight splits its volume by time; it counts as one irrigation on the day it started.
    """
    totals: dict[tuple[date, int | str], float] = {}
    counts: dict[tuple[date, int | str], int] = {}
    for run in runs:
        first_day = datetime.fromtimestamp(run.started_at, tz).date()
        counts[(first_day, run.zone_id)] = counts.get((first_day, run.zone_id), 0) + int(run.irrigation)
        for day, share in _day_shares(run.started_at, run.finished_at, tz):
            key = (day, run.zone_id)
            totals[key] = totals.get(key, 0.0) + run.volume_l * share
    keys = sorted(set(totals) | set(counts), key=lambda k: (k[0], str(k[1])))
    return [DailyUsage(d, z, totals.get((d, z), 0.0), counts.get((d, z), 0)) for d, z in keys]


def _day_shares(start: float, end: float, tz: tzinfo) -> list[tuple[date, float]]:
    day = datetime.fromtimestamp(start, tz).date()
    if end <= start:
        return [(day, 1.0)]
    out: list[tuple[date, float]] = []
    t = start
    while t < end:
        next_midnight = datetime.combine(day + timedelta(days=1), time(0), tz).timestamp()
        seg_end = min(end, next_midnight)
        out.append((day, (seg_end - t) / (end - start)))
        t = seg_end
        day = day + timedelta(days=1)
    return out
