"""Water usage per pump run (seed 003 §15): integrated from flow when the pump has a sensor, else nominal flow.

The safety loop calls ``track`` every tick and awaits ``flush`` at the end of it, so the rows are written by the
supervised loop itself (no fire-and-forget task whose failure nobody sees).
"""

from __future__ import annotations

import logging

from gateway.clock import Clock
from gateway.safety.channels import PumpChannel
from gateway.safety.rules import ChannelInputs
from gateway.store import water
from gateway.store.db import Database
from gateway.water.usage import integrate_volume

log = logging.getLogger(__name__)


class UsageLogger:
    """Collects finished pump runs and writes one ``water_usage_logs`` row per run."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._finished: list[tuple[PumpChannel, float, float, list[tuple[float, float]], str | None]] = []

    def track(self, ch: PumpChannel, inputs: ChannelInputs) -> None:
        """Note a run's start, its flow samples and its end."""
        wall = self._clock.time()
        if ch.relay_on and ch.run_started_wall is None:
            ch.run_started_wall, ch.flow_samples = wall, []
        fresh_flow = (
            inputs.flow_l_min is not None
            and inputs.flow_age_s is not None
            and inputs.flow_age_s < ch.limits.stale_after_s
        )
        if ch.relay_on and ch.limits.flow_sensor and fresh_flow:
            assert inputs.flow_l_min is not None and inputs.flow_age_s is not None
            sample = (wall - inputs.flow_age_s, inputs.flow_l_min)
            if not ch.flow_samples or ch.flow_samples[-1][0] != sample[0]:
                ch.flow_samples.append(sample)
        if not ch.relay_on and ch.run_started_wall is not None:
            self._finished.append((ch, ch.run_started_wall, wall, ch.flow_samples, ch.run_cmd_id))
            ch.run_started_wall, ch.flow_samples, ch.run_cmd_id = None, [], None

    async def flush(self) -> None:
        """Write the runs that ended this tick."""
        finished, self._finished = self._finished, []
        for ch, start, end, samples, cmd_id in finished:
            await self._log(ch, start, end, samples, cmd_id)

    async def _log(
        self, ch: PumpChannel, start: float, end: float, samples: list[tuple[float, float]], cmd_id: str | None
    ) -> None:
        details: dict[str, object] = {"kind": ch.role, "pump": ch.pump_id}
        if ch.node_uid is not None:
            details["node_uid"] = ch.node_uid
        if cmd_id is not None:
            details["cmd_id"] = cmd_id
        if samples:
            usage = integrate_volume(samples, start, end)
            volume, avg = usage.volume_l, usage.avg_flow_l_min
            details.update(source="flow_sensor", gaps_s=sum(g.seconds for g in usage.gaps))
        elif ch.nominal_flow_l_min is not None:
            volume = ch.nominal_flow_l_min * (end - start) / 60
            avg = ch.nominal_flow_l_min
            details["source"] = "nominal_flow"
        else:
            return
        await water.log_run(self._db, ch.zone_id, ch.channel, volume, int((end - start) * 1000), avg, details, start,
                            end)
