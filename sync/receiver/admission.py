"""Self-protection of the receiver: bounded concurrent batches, Retry-After, and a batch size hint.

A batch is admitted only while fewer than ``max_batches`` are in progress in this process and fewer
than ``max_batches_per_gateway`` for its gateway; otherwise it is answered ``429`` at once with a
``Retry-After`` - nothing waits in an unbounded queue. The time an admitted batch takes (waiting for a
database connection and the per-gateway lock included) feeds a hint, ``X-Max-Batch-Rows``, which the
uplink honours: a slow server asks for smaller batches, so a single request never holds a connection
for long and the many gateways of a fleet take turns.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

MAX_ROWS_HEADER = "X-Max-Batch-Rows"


@dataclass(frozen=True)
class AdmissionLimits:
    """Tunables (per receiver process)."""

    max_batches: int = 16  # concurrent batches in this process (about 2x the database pool)
    max_batches_per_gateway: int = 2  # one gateway cannot take the process's slots from the others
    retry_after_s: int = 1  # the smallest Retry-After; the answer is spread up to 1 + 2x this by load
    target_batch_s: float = 1.0  # a batch taking longer than this shrinks the hint
    min_hint_rows: int = 100
    max_hint_rows: int = 2000  # a hint at or above this is dropped (no limit asked for)


@dataclass
class Admission:
    """Counts batches in progress; decides admit or 429; keeps the batch size hint."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    rng: random.Random = field(default_factory=random.Random)
    in_flight: int = 0
    per_gateway: Counter[str] = field(default_factory=Counter)
    hint_rows: int | None = None
    peak_in_flight: int = 0

    def try_enter(self, gateway_id: str) -> str | None:
        """Admit a batch (None) or say why not ("process" or "gateway")."""
        if self.in_flight >= self.limits.max_batches:
            return "process"
        if self.per_gateway[gateway_id] >= self.limits.max_batches_per_gateway:
            return "gateway"
        self.in_flight += 1
        self.per_gateway[gateway_id] += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return None

    def leave(self, gateway_id: str) -> None:
        """A batch admitted by ``try_enter`` is done (answered or failed)."""
        self.in_flight -= 1
        self.per_gateway[gateway_id] -= 1
        if self.per_gateway[gateway_id] <= 0:
            del self.per_gateway[gateway_id]

    def retry_after(self) -> int:
        """Whole seconds to wait: spread at random so a refused herd does not come back in one wave."""
        base = self.limits.retry_after_s
        return base + self.rng.randint(0, 2 * base)

    def observe(self, rows: int, elapsed_s: float) -> None:
        """Learn from one stored batch: shrink the hint when slow, let it grow back when fast."""
        target = self.limits.target_batch_s
        if elapsed_s > target and rows > 0:
            wanted = max(self.limits.min_hint_rows, int(rows * target / elapsed_s))
            self.hint_rows = wanted if self.hint_rows is None else min(self.hint_rows, wanted)
        elif self.hint_rows is not None and elapsed_s < target / 2:
            grown = int(self.hint_rows * 1.25) + 1
            self.hint_rows = None if grown >= self.limits.max_hint_rows else grown

    def headers(self) -> dict[str, str]:
        """Headers every batch answer carries (the hint, when there is one)."""
        return {MAX_ROWS_HEADER: str(self.hint_rows)} if self.hint_rows is not None else {}
