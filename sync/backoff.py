"""Capped exponential backoff with full jitter, and Retry-After parsing (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime


@dataclass
class Backoff:
    """Full jitter: the n-th consecutive failure waits uniform(0, min(cap, base * 2**n)).

    Full jitter (not "equal" jitter) spreads a fleet of gateways that lost the link at the same
    moment, so the central side is not hit by synchronised retry waves when it comes back.
    """

    base_s: float = 1.0
    cap_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        # min() before the power would overflow after ~1000 failures; the exponent is clamped instead.
        return min(self.cap_s, self.base_s * float(2 ** min(self.failures, 60)))

    def next_delay(self) -> float:
        """Delay before the next attempt; counts one more failure."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget failures after a success."""
        self.failures = 0


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_wall)
