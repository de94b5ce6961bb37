"""AutomationService: recipes → schedules and dosing, plus aggregation and the water usage rollup, in one service.

The lead's app supervises ``run()``; other services add their periodic work with
``register_periodic(name, coro_fn, interval_s)`` (water-change checks, recirc ticks, retention).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

from gateway.alerts import Alerts
from gateway.automation.aggregate import Aggregator, RunReport
from gateway.automation.config import AutomationConfig
from gateway.automation.dosing_service import DosingService, ReadingSource, TelemetryLastSource
from gateway.automation.recipes import Recipe
from gateway.automation.schedule_runner import Driver, Scheduler
from gateway.automation.usage_rollup import UsageRollup
from gateway.automation.zone_jobs import CommandSubmitter, ZoneJobs
from gateway.automation.zones import ZoneIds, ZonePlan, ZoneState, zone_plans
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.settings import ZoneConfig
from gateway.store.db import Database

log = logging.getLogger(__name__)


class AutomationService:
    """Owns the scheduler and everything it runs."""

    def __init__(self, db: Database, alerts: Alerts, commands: CommandSubmitter, zone_state: ZoneState,
                 clock: Clock, *, zones: Sequence[ZoneConfig], recipes: Mapping[str, Recipe], timezone: str = "UTC",
                 config: AutomationConfig | None = None, readings: ReadingSource | None = None,
                 driver: Driver | None = None, metrics: Metrics | None = None) -> None:
        self.config = cfg = config or AutomationConfig()
        self._clock = clock
        self._metrics = metrics = metrics or Metrics()  # one registry for the scheduler, dosing and aggregation
        self.tz = ZoneInfo(timezone)
        self.plans: list[ZonePlan] = zone_plans(zones, recipes)  # raises RecipeError naming the key
        self._zone_ids = ZoneIds(db)
        self.scheduler = Scheduler(db, clock, driver=driver, max_sleep_s=cfg.scheduler_max_sleep_s, metrics=metrics)
        self.zone_jobs = ZoneJobs(commands, alerts, self._zone_ids, self.tz, cfg.irrigation_grace_s)
        self.dosing = DosingService(db, alerts, commands, zone_state, readings or TelemetryLastSource(db), clock,
                                    self.plans, self.tz, cfg.dosing, metrics)
        self.aggregator = Aggregator(db, clock, self.tz, lateness_s=cfg.aggregate_lateness_s,
                                     chunk_rows=cfg.aggregate_chunk_rows)
        self.usage = UsageRollup(db, clock, self.tz)
        self._install_jobs()
        self.register_periodic("dosing", self.dosing.tick, cfg.dosing_interval_s)
        self.register_periodic("aggregate", self.aggregate, cfg.aggregate_interval_s, run_at_start=True)
        self.register_periodic("water_usage_rollup", self.rollup_usage, cfg.usage_rollup_interval_s,
                               run_at_start=True)
        self.register_periodic("aggregate_retention", self.prune_aggregates, cfg.retention_interval_s)

    def register_periodic(self, name: str, coro_fn: Callable[[], Awaitable[object]], interval_s: float,
                          run_at_start: bool = False) -> None:
        """Run ``coro_fn`` every ``interval_s`` seconds (monotonic) under this service."""
        self.scheduler.register_periodic(name, coro_fn, interval_s, run_at_start)

    def apply_config(self, zones: Sequence[ZoneConfig], recipes: Mapping[str, Recipe]) -> None:
        """Adopt a new config (from upstream); raises RecipeError and keeps the old one if an assignment is bad."""
        plans = zone_plans(zones, recipes)
        self.plans = plans
        self.dosing.set_zones(plans)
        self._install_jobs()

    def _install_jobs(self) -> None:
        for job_id in self.scheduler.job_ids():
            self.scheduler.remove(job_id)
        for plan in self.plans:
            for job in self.zone_jobs.jobs_for(plan):
                self.scheduler.add(job)

    async def aggregate(self) -> RunReport:
        """Fold new samples into the aggregates and report it on /metrics."""
        report = await self.aggregator.run_once()
        self._metrics.aggregation_samples.inc(report.samples)
        self._metrics.aggregation_late.inc(report.late_dropped)
        self._metrics.aggregation_last_run.set(self._clock.time())
        return report

    async def rollup_usage(self) -> int:
        """Refresh which channels irrigate, then roll water usage up."""
        channels: dict[int, frozenset[str]] = {}
        for plan in self.plans:
            zone_id = await self._zone_ids.get(plan.uid)
            act = plan.actuators.get("irrigation")
            if zone_id is not None and act is not None:
                channels[zone_id] = frozenset({act.channel})
        self.usage.set_irrigation_channels(channels)
        return await self.usage.run_once()

    async def prune_aggregates(self) -> int:
        """Drop minute/hour aggregates past their retention."""
        return await self.aggregator.prune(self.config.keep_agg_1m_days, self.config.keep_agg_1h_days)

    async def run(self) -> None:
        """Restore dosing memory, catch up missed schedules, then run forever."""
        await self.dosing.load()
        log.info("automation: %d zone(s) with a recipe, jobs %s, driver %s",
                 sum(p.assignment is not None for p in self.plans), self.scheduler.job_ids(), self.scheduler.driver)
        await self.scheduler.run()
