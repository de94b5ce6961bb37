"""Session expiry, the wrong-credential window (on a hand-driven clock, no waiting) and chart drawing."""

from __future__ import annotations

from gateway.telemetry_metrics import Metric
from gateway.web.ratelimit import FailureLimiter
from gateway.web.series import RANGES, ChartPoint, ChartSeries
from gateway.web.sessions import SessionStore
from gateway.web.svg import chart_svg


class Time:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_when_idle_or_too_old_and_are_never_reused():
    t = Time()
    store = SessionStore(t, idle_s=60, max_age_s=300, max_sessions=2)
    a = store.create("admin")
    assert store.get(a.sid) is a and a.csrf_token != a.sid and len(a.sid) >= 40
    t.now += 59
    assert store.get(a.sid) is a  # use refreshes the idle timer
    t.now += 59
    assert store.get(a.sid) is a
    t.now += 61
    assert store.get(a.sid) is None  # idle too long
    b = store.create("admin")
    for _ in range(6):
        t.now += 50
        assert store.get(b.sid) is b
    t.now += 50
    assert store.get(b.sid) is None  # older than max_age even though used all along
    c, d, e = store.create("admin"), store.create("admin"), store.create("admin")
    assert store.get(c.sid) is None and store.get(d.sid) is d and store.get(e.sid) is e  # bounded: oldest evicted
    store.drop(d.sid)
    assert store.get(d.sid) is None and store.get("") is None and store.get(None) is None


def test_limiter_blocks_after_five_failures_until_the_oldest_ages_out():
    t = Time()
    limiter = FailureLimiter(t, max_failures=5, window_s=60)
    for i in range(5):
        assert limiter.retry_after("10.0.0.7") is None
        limiter.failure("10.0.0.7")
        t.now += 10 if i == 0 else 1
    assert limiter.retry_after("10.0.0.7") == 60 - 14  # first failure at 1000, now 1014
    assert limiter.retry_after("10.0.0.8") is None  # per client
    t.now += 46
    assert limiter.retry_after("10.0.0.7") is None  # the first failure left the window
    limiter.failure("10.0.0.7")
    assert limiter.retry_after("10.0.0.7") is not None
    limiter.success("10.0.0.7")
    assert limiter.retry_after("10.0.0.7") is None


def test_limiter_memory_is_bounded_under_a_spray_of_addresses():
    t = Time()
    limiter = FailureLimiter(t, max_failures=1, window_s=60, max_clients=100)
    for i in range(1000):
        limiter.failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._failures) <= 100
    assert limiter.retry_after("10.0.3.231") is not None  # the newest are kept


def test_chart_gaps_split_the_line_and_the_axis_stays_physical():
    rng = RANGES["24h"]
    pts = [ChartPoint(0.0 + 300 * i, 0.0, 1.0, 0.5, 3) for i in range(5)]
    pts += [ChartPoint(300 * 20 + 300 * i, 0.0, 2.0, 1.0, 3) for i in range(3)]  # after a 75 min outage
    svg = chart_svg(ChartSeries("zone-a", Metric.FLOW_RATE, rng, -300.0, 86400.0, "telemetry_samples", tuple(pts)))
    assert svg.count("<polyline") == 2 and svg.count("<polygon") == 2
    assert ">-" not in svg  # flow cannot be negative: no negative axis label
    one = chart_svg(ChartSeries("z", Metric.PH, rng, 0.0, 86400.0, "s", (ChartPoint(600.0, 6.0, 6.0, 6.0, 1),)))
    assert "<circle" in one and "<polyline" not in one
    assert "no data in this range" in chart_svg(ChartSeries("z", Metric.PH, rng, 0.0, 86400.0, "s", ()))
