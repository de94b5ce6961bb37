"""Periodic process bookkeeping: gauges for broker clients, database size and RSS, sync backlog, broker refusals.

Also watches the broker's listener (``infra_mqtt_down``) and alerts when an MQTT client tried to publish a
command or config (refused by the ACL).
"""

from __future__ import annotations

import os

from gateway.alerts import Alerts
from gateway.broker.server import EmbeddedBroker
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.store.db import Database
from gateway.upstream.sync import UpstreamSync

PERIOD_S = 5.0
PROBE_EVERY = 6  # listener probes every 30 s: a closed listener is rare, the gauges are not


def process_rss_bytes() -> int:
    """This process's resident set size (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class Housekeeping:
    """The 5-second bookkeeping loop (a supervised service)."""

    def __init__(self, broker: EmbeddedBroker, db: Database, alerts: Alerts, metrics: Metrics, clock: Clock,
                 sync: UpstreamSync, mqtt_port: int) -> None:
        self._broker = broker
        self._db = db
        self._alerts = alerts
        self._metrics = metrics
        self._clock = clock
        self._sync = sync
        self._port = mqtt_port  # the configured port until the listener is seen serving on its bound one

    async def run(self) -> None:
        """Update the gauges forever; probe the listener every ``PROBE_EVERY`` rounds."""
        probes = 0
        while True:
            if probes % PROBE_EVERY == 0:
                await self.probe_broker()
            probes += 1
            await self.update_once()
            await self._clock.sleep(PERIOD_S)

    async def probe_broker(self) -> None:
        """infra_mqtt_down while the broker's listener is not serving (no traffic: nodes see nothing)."""
        if not self._broker.is_serving():
            await self._alerts.raise_alert("infra_mqtt_down", details={"port": self._port})
            return
        self._port = self._broker.port
        await self._alerts.resolve("infra_mqtt_down")

    async def update_once(self) -> None:
        """One round of gauges and refusal counters."""
        self._metrics.broker_clients.set(len(self._broker.clients()))
        self._metrics.db_size_bytes.set(await self._db.size_bytes())
        self._metrics.process_rss_bytes.set(process_rss_bytes())
        self._sync.update_metrics()
        broker = self._broker.broker
        for reason, count in list(broker.refusals.items()):
            counter = self._metrics.broker_refusals.labels(reason=reason)
            counter.inc(count)
            broker.refusals[reason] -= count
            if reason == "acl_gateway_topic" and count:
                await self._alert_command_bypass()

    async def _alert_command_bypass(self) -> None:
        """An MQTT client tried to publish a command or config (refused): the operator should know who."""
        broker = self._broker.broker
        who, topic = broker.last_refused.get("acl_gateway_topic", ("?", "?"))
        details = {"refused_total": broker.counters["acl_gateway_topic"], "last_client": who, "last_topic": topic}
        await self._alerts.raise_alert("infra_mqtt_command_refused", details=details)
