"""Per-stream progress as the operator sees it: backlog, lag, rate (EWMA), ETA, errors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypedDict


@dataclass
class RateMeter:
    """Rows per second, exponentially weighted over ``tau_s`` and decaying while nothing is sent."""

    tau_s: float = 30.0
    rate: float = 0.0
    last_at: float | None = None

    def start(self, now: float) -> None:
        """Begin measuring from ``now`` (called when a stream starts sending after being idle)."""
        if self.last_at is None:
            self.last_at = now

    def add(self, rows: int, now: float) -> None:
        """Account ``rows`` sent since the previous call."""
        if self.last_at is None:
            self.last_at = now
            return
        dt = max(now - self.last_at, 1e-6)
        alpha = 1.0 - math.exp(-dt / self.tau_s)
        self.rate += alpha * (rows / dt - self.rate)
        self.last_at = now

    def value(self, now: float) -> float:
        """Current rate, decayed by the time since the last batch."""
        if self.last_at is None:
            return 0.0
        idle = max(0.0, now - self.last_at)
        return self.rate * math.exp(-idle / self.tau_s)

    def stop(self) -> None:
        """The stream caught up: the next send starts a fresh interval."""
        self.last_at = None
        self.rate = 0.0


class StreamStatus(TypedDict):
    """``SyncStatus.to_dict()``: one stream as /api/status and /metrics show it."""

    stream: str
    state: str
    cursor: int
    backlog_rows: int
    oldest_unsynced_age_s: float | None
    last_success_at: float | None
    send_rate_rows_s: float
    catch_up_eta_s: float | None
    attempts: int
    last_error: str | None
    last_status: int | None
    last_delay_s: float | None
    next_attempt_in_s: float | None
    batch_limit: int
    rows_sent: int
    batches_sent: int
    duplicate_batches: int
    quarantined_rows: int


@dataclass
class SyncStatus:
    """Live state of one stream; ``to_dict`` makes it JSON-ready."""

    stream: str
    state: str = "starting"  # starting | checking | idle | sending | backoff | denied | conflict | storage_error
    cursor: int = 0
    backlog_rows: int = 0
    oldest_unsynced_at: float | None = None
    last_success_at: float | None = None
    attempts: int = 0
    last_error: str | None = None
    last_status: int | None = None
    last_delay_s: float | None = None
    next_attempt_at: float | None = None  # monotonic
    batch_limit: int = 0
    rows_sent: int = 0
    batches_sent: int = 0
    duplicate_batches: int = 0
    quarantined_rows: int = 0
    meter: RateMeter = field(default_factory=RateMeter)

    def to_dict(self, now_wall: float, now_mono: float) -> StreamStatus:
        """Snapshot for /api/status and /metrics."""
        rate = self.meter.value(now_mono)
        age = None if self.oldest_unsynced_at is None else max(0.0, now_wall - self.oldest_unsynced_at)
        eta = 0.0 if self.backlog_rows == 0 else (self.backlog_rows / rate if rate > 0.01 else None)
        wait = None if self.next_attempt_at is None else max(0.0, self.next_attempt_at - now_mono)
        return {
            "stream": self.stream,
            "state": self.state,
            "cursor": self.cursor,
            "backlog_rows": self.backlog_rows,
            "oldest_unsynced_age_s": age,
            "last_success_at": self.last_success_at,
            "send_rate_rows_s": round(rate, 3),
            "catch_up_eta_s": eta,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_status": self.last_status,
            "last_delay_s": self.last_delay_s,
            "next_attempt_in_s": wait,
            "batch_limit": self.batch_limit,
            "rows_sent": self.rows_sent,
            "batches_sent": self.batches_sent,
            "duplicate_batches": self.duplicate_batches,
            "quarantined_rows": self.quarantined_rows,
        }
