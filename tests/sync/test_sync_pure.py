"""Pure parts of the sync: backoff with full jitter, Retry-After, rate/ETA, start-up checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sync.backoff import Backoff, parse_retry_after
from sync.settings_check import check_upstream_settings
from sync.status import RateMeter, SyncStatus

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_full_jitter_draws_uniformly_below_a_doubling_capped_ceiling() -> None:
    backoff = Backoff(base_s=0.5, cap_s=20.0, rng=random.Random(42))
    reference = random.Random(42)
    ceilings = []
    for n in range(12):
        ceilings.append(backoff.ceiling())
        assert backoff.next_delay() == reference.uniform(0, min(20.0, 0.5 * 2**n))
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 20, 20, 20, 20, 20, 20]
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_full_jitter_spreads_a_fleet_and_survives_endless_failures() -> None:
    delays = [Backoff(1.0, 300.0, random.Random(seed), failures=10).next_delay() for seed in range(200)]
    assert min(delays) < 30 and max(delays) > 270  # spread over the whole [0, cap] range
    endless = Backoff(1.0, 300.0, random.Random(1), failures=10_000)
    assert 0 <= endless.next_delay() <= 300.0


@pytest.mark.parametrize(("header", "expected"), [
    ("7", 7.0), (" 120 ", 120.0), ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),
    ("Wed, 31 Dec 2025 23:00:00 GMT", 0.0), ("soon", None), ("", None), (None, None), ("-5", None),
])
def test_retry_after_accepts_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_send_rate_is_smoothed_and_gives_an_eta() -> None:
    meter = RateMeter(tau_s=10.0)
    meter.start(0.0)
    for t in range(1, 61):
        meter.add(1000, float(t))  # a steady 1000 rows/s
    assert meter.value(60.0) == pytest.approx(1000, rel=0.01)
    assert meter.value(70.0) == pytest.approx(1000 / 2.718, rel=0.01)  # decays while nothing is sent
    status = SyncStatus("telemetry", backlog_rows=30_000, meter=meter, oldest_unsynced_at=NOW - 90)
    snap = status.to_dict(NOW, 60.0)
    assert snap["catch_up_eta_s"] == pytest.approx(30.0, rel=0.01)
    assert snap["oldest_unsynced_age_s"] == 90 and snap["send_rate_rows_s"] == pytest.approx(1000, rel=0.01)
    assert SyncStatus("alerts").to_dict(NOW, 0.0)["catch_up_eta_s"] == 0.0


def test_upstream_settings_are_checked_at_start(tmp_path: Path) -> None:
    assert check_upstream_settings(None, None, None) == []  # sync disabled
    assert check_upstream_settings("https://central.example/api", "s3cr3t", None) == []
    assert check_upstream_settings("http://127.0.0.1:8080", "s3cr3t", None) == []
    assert check_upstream_settings("https://central.example", None, None) == [
        "upstream.token_file: required when upstream.url is set"]
    assert check_upstream_settings("https://central.example", "  \n", None) == [
        "upstream.token_file: required when upstream.url is set"]
    assert check_upstream_settings("http://central.example", "t", None) == [
        "upstream.url: plain http is only allowed to localhost; use https://"]
    assert check_upstream_settings("ftp://central.example", "t", None)[0].startswith("upstream.url: must start")
    assert check_upstream_settings("https://central.example", "a b", None) == [
        "upstream.token_file: the token contains whitespace or control characters"]
    missing = tmp_path / "nope.pem"
    assert check_upstream_settings("https://c.example", "t", missing) == [
        f"upstream.ca_file: {missing} does not exist"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert check_upstream_settings("https://c.example", "t", garbage)[0].startswith(
        f"upstream.ca_file: {garbage} is not a readable PEM CA bundle")
