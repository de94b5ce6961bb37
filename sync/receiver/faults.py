"""Fault injection switches of the reference receiver (tests turn them on through the admin API)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Faults:
    """What to break, and how often; all off by default."""

    fail_rate: float = 0.0  # share of gateway requests answered with fail_status before doing anything
    fail_next: int = 0  # the next N gateway requests fail with fail_status (deterministic)
    fail_status: int = 503
    retry_after: str | None = None  # Retry-After header sent with injected failures
    slow_ms: int = 0  # added latency per gateway request
    slow_jitter_ms: int = 0
    reset_rate: float = 0.0  # share of requests whose connection is aborted before anything is stored
    drop_after_commit_rate: float = 0.0  # share of batch/claim requests whose response is lost after commit
    drop_after_commit_next: int = 0  # the next N batch/claim responses are lost after commit (deterministic)
    hold_batches: bool = False  # admitted batches wait (holding their slot) until this is switched off
    store_delay_ms: int = 0  # added to every admitted batch before it is stored (a slow database)
    reject_seqs: dict[str, list[int]] = field(default_factory=dict)  # 422 for batches holding these seqs
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a partial update from the admin API; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(self)} - {"rng"}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault switches: {sorted(unknown)}")
        for key, value in changes.items():
            setattr(self, key, value)
        if "seed" in changes:
            self.rng = random.Random(self.seed)

    def as_dict(self) -> dict[str, object]:
        """Current switches (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "rng"}

    def take_failure(self) -> bool:
        """Should this request get an injected failure status?"""
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return self.fail_rate > 0 and self.rng.random() < self.fail_rate

    def chance(self, rate: float) -> bool:
        """Bernoulli draw with the seeded generator."""
        return rate > 0 and self.rng.random() < rate

    def take_drop(self) -> bool:
        """Should the response of this committed request be lost?"""
        if self.drop_after_commit_next > 0:
            self.drop_after_commit_next -= 1
            return True
        return self.chance(self.drop_after_commit_rate)

    def delay_s(self) -> float:
        """Latency to add to this request."""
        if self.slow_ms <= 0 and self.slow_jitter_ms <= 0:
            return 0.0
        return (self.slow_ms + self.rng.uniform(0, self.slow_jitter_ms)) / 1000.0

    def rejects(self, stream: str, seqs: list[int]) -> list[int]:
        """Seqs of this batch that the switches say must be rejected."""
        bad = set(self.reject_seqs.get(stream, ()))
        return [s for s in seqs if s in bad]
