"""Latest readings per zone and metric, in memory, fed by ingest for the safety loop and automation."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.telemetry_metrics import Metric


@dataclass(frozen=True, slots=True)
class Reading:
    """A value with the monotonic times it was received and measured (freshness is judged on the gateway's clock).

    ``measured_mono`` is the measurement moment on the gateway's monotonic clock, derived from the sample's own
    ``ts`` when the node's clock is trusted; None means "as received". A level measured two hours ago and
    delivered now is two hours old, not fresh.
    """

    value: float
    received_mono: float
    ts: float
    node_id: int
    channel: str | None
    measured_mono: float | None = None

    @property
    def taken_mono(self) -> float:
        """When the value was measured, on the monotonic clock (receipt when the node's time is not trusted)."""
        return self.received_mono if self.measured_mono is None else self.measured_mono


class LatestReadings:
    """The newest reading per (zone, metric[, channel]); absent means unavailable, never 0."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, Metric, str | None], Reading] = {}

    def update(self, zone_id: int, metric: Metric, reading: Reading) -> None:
        """Record a reading (per channel and for the zone); an older measurement never replaces a newer one."""
        key = (zone_id, metric, reading.channel)
        current = self._by_key.get(key)
        if current is not None and current.taken_mono > reading.taken_mono:
            return
        self._by_key[key] = reading
        if reading.channel is not None:
            self._by_key[(zone_id, metric, None)] = reading

    def get(self, zone_id: int, metric: Metric, channel: str | None = None) -> Reading | None:
        """Newest reading or None."""
        return self._by_key.get((zone_id, metric, channel))

    def age(self, zone_id: int, metric: Metric, now_mono: float, channel: str | None = None) -> float | None:
        """Seconds since the newest reading, or None when there is none."""
        r = self.get(zone_id, metric, channel)
        return None if r is None else now_mono - r.taken_mono
