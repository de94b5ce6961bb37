"""Server-side SVG line charts: a min–max band with the average line, time ticks in the gateway's zone.

Only presentation attributes (no <style>), so the chart renders under a strict Content-Security-Policy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from gateway.telemetry_metrics import PHYSICAL_RANGE
from gateway.web.series import LABELS, ChartPoint, ChartSeries

# A narrow viewBox keeps the 15-unit labels legible (~11 px) when a 360 px phone scales the chart down.
WIDTH, HEIGHT = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 54, 10, 12, 26


def chart_svg(series: ChartSeries, tz: str = "UTC", target: Mapping[str, float] | None = None) -> str:
    """The whole <svg> element for a series (an empty range gets a 'no data' note).

    ``target`` ({"low", "high"}) is drawn as a green band behind the data, the range the reading should keep to.
    """
    title = f"{LABELS[series.metric]} ({series.unit}), {series.range.label}"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%"'
        f' role="img" aria-label="{escape(title)}" data-metric="{series.metric.value}"'
        f' data-points="{len(series.points)}">'
        f"<title>{escape(title)}</title>"
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
    )
    body = [head, *_x_axis(series, tz)]
    if not series.points:
        body.append(
            f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" font-size="16"'
            ' fill="#6b7280">no data in this range</text>'
        )
        body.append("</svg>")
        return "".join(body)
    lo, hi, step = _y_bounds(series, target)
    if target is not None:
        body.append(_target_band(target, lo, hi))
    body.extend(_y_axis(lo, hi, step))
    for run in _runs(series.points, series.range.bucket_s):
        body.append(_band(run, series, lo, hi))
        body.append(_line(run, series, lo, hi))
    body.append("</svg>")
    return "".join(body)


def _x(t: float, series: ChartSeries) -> float:
    span = max(series.end - series.start, 1.0)
    return LEFT + (t - series.start) / span * (WIDTH - LEFT - RIGHT)


def _y(v: float, lo: float, hi: float) -> float:
    return TOP + (hi - v) / (hi - lo) * (HEIGHT - TOP - BOTTOM)


def _target_band(target: Mapping[str, float], lo: float, hi: float) -> str:
    top = _y(min(target["high"], hi), lo, hi)
    bottom = _y(max(target["low"], lo), lo, hi)
    return (
        f'<rect class="target" x="{LEFT}" y="{top:.1f}" width="{WIDTH - LEFT - RIGHT}"'
        f' height="{max(bottom - top, 0):.1f}"'
        f' fill="#bbf7d0" fill-opacity="0.6" data-low="{target["low"]:g}" data-high="{target["high"]:g}"/>'
    )


def _y_bounds(series: ChartSeries, target: Mapping[str, float] | None = None) -> tuple[float, float, float]:
    """Axis bounds on round tick values (1/2/5 × 10^k), never beyond what the metric can physically be."""
    points = series.points
    lo = min(p.min for p in points)
    hi = max(p.max for p in points)
    if target is not None and target["high"] - target["low"] < 50 * max(hi - lo, 1e-9):
        # The target band stays in view unless it would squash the data to a flat line.
        lo, hi = min(lo, target["low"]), max(hi, target["high"])
    if hi - lo < 1e-9:
        lo, hi = lo - max(abs(lo) * 0.02, 0.1), hi + max(abs(hi) * 0.02, 0.1)
    step = _nice_step((hi - lo) / 3)
    floor_, ceil_ = PHYSICAL_RANGE[series.metric]
    lo = max(math.floor(lo / step) * step, floor_)
    hi = min(math.ceil(hi / step) * step, ceil_)
    if hi <= lo:
        hi = lo + step
    return lo, hi, step


def _nice_step(raw: float) -> float:
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * base >= raw * (1 - 1e-9))


def _runs(points: tuple[ChartPoint, ...], bucket_s: int) -> list[list[ChartPoint]]:
    """Split at gaps longer than two buckets so an outage shows as a gap, not a straight line."""
    runs: list[list[ChartPoint]] = [[points[0]]]
    for prev, cur in itertools.pairwise(points):
        if cur.t - prev.t > 2 * bucket_s:
            runs.append([])
        runs[-1].append(cur)
    return runs


def _center(p: ChartPoint, series: ChartSeries) -> float:
    return _x(min(p.t + series.range.bucket_s / 2, series.end), series)


def _line(run: list[ChartPoint], series: ChartSeries, lo: float, hi: float) -> str:
    pts = " ".join(f"{_center(p, series):.1f},{_y(p.avg, lo, hi):.1f}" for p in run)
    if len(run) == 1:
        x, y = _center(run[0], series), _y(run[0].avg, lo, hi)
        return f'<circle class="avg" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#0f766e"/>'
    return f'<polyline class="avg" points="{pts}" fill="none" stroke="#0f766e" stroke-width="2"/>'


def _band(run: list[ChartPoint], series: ChartSeries, lo: float, hi: float) -> str:
    upper = [f"{_center(p, series):.1f},{_y(p.max, lo, hi):.1f}" for p in run]
    lower = [f"{_center(p, series):.1f},{_y(p.min, lo, hi):.1f}" for p in reversed(run)]
    return f'<polygon class="band" points="{" ".join(upper + lower)}" fill="#99f6e4" fill-opacity="0.5"/>'


def _y_axis(lo: float, hi: float, step: float) -> list[str]:
    decimals = next(d for d in range(7) if d == 6 or abs(round(step, d) - step) < step * 1e-6)
    out = []
    for i in range(round((hi - lo) / step) + 1):
        v = lo + i * step
        y = _y(v, lo, hi)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(
            f'<text x="{LEFT - 4}" y="{y + 5:.1f}" text-anchor="end" font-size="15" fill="#374151">'
            f"{v:.{decimals}f}</text>"
        )
    return out


def _x_axis(series: ChartSeries, tz: str) -> list[str]:
    return time_axis(series.start, series.end, tz, HEIGHT)


def time_axis(t0: float, t1: float, tz: str, height: int) -> list[str]:
    """Local-time ticks along the bottom of a drawing ``height`` high covering ``[t0, t1]``."""
    zone = ZoneInfo(tz)
    span = t1 - t0
    daily = span > 2 * 86400
    hourly = span <= 2 * 3600
    step = timedelta(days=1) if daily else timedelta(minutes=15) if hourly else timedelta(hours=6)
    start = datetime.fromtimestamp(t0, zone)
    tick = start.replace(minute=0, second=0, microsecond=0)
    if daily:
        tick = tick.replace(hour=0)
    elif not hourly:
        tick = tick.replace(hour=tick.hour - tick.hour % 6)
    out = [f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{height - BOTTOM}" y2="{height - BOTTOM}" stroke="#9ca3af"/>']
    while tick.timestamp() <= t1:
        t = tick.timestamp()
        if t >= t0:
            x = LEFT + (t - t0) / max(span, 1.0) * (WIDTH - LEFT - RIGHT)
            label = tick.strftime("%a") if daily else tick.strftime("%H:%M")
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{height - BOTTOM}" stroke="#f3f4f6"/>')
            out.append(
                f'<text x="{x:.1f}" y="{height - 7}" text-anchor="middle" font-size="15" fill="#374151">{label}</text>'
            )
        # Aware datetime + timedelta is wall-clock arithmetic: ticks stay on local hours across DST.
        tick = (tick + step).astimezone(zone)
    return out


# ---- pump activity strip ---------------------------------------------------------------------
STRIP_ROW = 26  # a name line over a bar line per row
STRIP_TOP = 4


def activity_svg(
    runs: list[tuple[str, float, float]],
    doses: list[tuple[str, float, float]],
    channels: list[str],
    start: float,
    end: float,
    tz: str = "UTC",
    label: str = "",
) -> str:
    """Pump ON periods (one row per channel) and doses (ticks on a last row) over ``[start, end]``.

    ``runs`` are (channel, on_at, off_at); ``doses`` are (reagent, at, ml). Drawn on the charts' time axis.
    """
    rows = [*channels, "doses"]
    height = STRIP_TOP + STRIP_ROW * len(rows) + BOTTOM
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return LEFT + (min(max(t, start), end) - start) / span * (WIDTH - LEFT - RIGHT)

    title = escape(label or "Pump activity")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="activity" viewBox="0 0 {WIDTH} {height}" width="100%"'
        f' role="img" aria-label="{title}" data-runs="{len(runs)}" data-doses="{len(doses)}">'
        f"<title>{title}</title>"
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>'
    ]
    for i, name in enumerate(rows):
        y = STRIP_TOP + i * STRIP_ROW
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y + STRIP_ROW - 1}" y2="{y + STRIP_ROW - 1}"'
                   ' stroke="#f3f4f6"/>')
        out.append(f'<text x="{LEFT}" y="{y + 11}" font-size="13" fill="#374151">{escape(name)}</text>')
    for channel, on_at, off_at in runs:
        if channel not in channels or off_at < start or on_at > end:
            continue
        y = STRIP_TOP + channels.index(channel) * STRIP_ROW + 14
        x0, x1 = x(on_at), x(off_at)
        out.append(f'<rect class="run" data-channel="{escape(channel)}" x="{x0:.1f}" y="{y}"'
                   f' width="{max(x1 - x0, 1.5):.1f}" height="9" fill="#2563eb" fill-opacity="0.75"/>')
    y = STRIP_TOP + len(channels) * STRIP_ROW + 13
    for reagent, at, ml in doses:
        if start <= at <= end:
            out.append(f'<line class="dose" data-reagent="{escape(reagent)}" data-ml="{ml:g}" x1="{x(at):.1f}"'
                       f' x2="{x(at):.1f}" y1="{y}" y2="{y + 11}" stroke="#b45309" stroke-width="1.5"/>')
    out.extend(time_axis(start, end, tz, height))
    out.append("</svg>")
    return "".join(out)
