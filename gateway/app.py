"""The composition of the gateway: one TaskGroup supervises every service; ordered start, fail-safe finally."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from firmware_contracts.topics import TopicKind
from gateway.alerts import Alerts
from gateway.broker.acl import TopicACL
from gateway.broker.auth import Account, Authenticator
from gateway.broker.limits import BrokerLimits
from gateway.broker.server import EmbeddedBroker
from gateway.clock import Clock, SystemClock
from gateway.commands import CommandService
from gateway.hardware_setup import hardware_config
from gateway.ingest import Ingest
from gateway.metrics import Metrics
from gateway.readings import LatestReadings
from gateway.registry import Registry
from gateway.router import Router
from gateway.sequences import NodeSequences
from gateway.settings import Settings
from gateway.storage import StorageGuard
from gateway.store.db import Database, is_corruption, mark_corrupt, open_or_recover
from gateway.timesync import ClockSyncProbe
from gateway.transport import NodeTransport
from gateway.writer import TelemetryWriter
from sync.generation import StartMarks, capture_start

log = logging.getLogger(__name__)

Service = Callable[[], Awaitable[None]]


class ServiceCrashed(RuntimeError):
    """A supervised service ended unexpectedly; the process exits non-zero so systemd restarts it."""


class Gateway:
    """Builds every component from Settings and runs them under one TaskGroup."""

    hardware: Any
    gate: Any  # gateway.safety.gate.SafetyGate: the one door to every pump, built once the hardware is open
    commands: CommandService
    safety: Any  # gateway.safety.service.SafetyService, built in run() once the hardware is open
    water: Any  # gateway.water.service.WaterService
    simulation: Any = None  # gateway.sim.demo.DemoSimulation in the demo
    sync: Any  # gateway.upstream.UpstreamSync
    automation: Any  # gateway.automation.service.AutomationService
    db_start: StartMarks | None = None  # local sequence marks when the database was opened

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.metrics = Metrics()
        self.db = Database(settings.db_path, settings.ingest.synchronous)
        self.alerts = Alerts(self.db, self.clock, self.metrics)
        self.latest = LatestReadings()
        self.router = Router(
            self.metrics, self.clock, settings.ingest.router_queue_max, settings.broker.max_payload_bytes
        )
        accounts = [Account(u.username, u.password_hash, u.role) for u in settings.broker.users]
        self.authenticator = Authenticator(accounts, settings.broker.allow_anonymous)
        self.broker = EmbeddedBroker(
            settings.broker.host,
            settings.broker.port,
            self.router,
            self.authenticator,
            TopicACL(settings.broker.allow_anonymous),
            settings.broker.max_connections,
            limits=BrokerLimits.from_settings(settings.broker),
        )
        self.transport = NodeTransport(self.broker.publish, self.router)
        self.registry = Registry(
            self.db,
            self.alerts,
            self.clock,
            self.metrics,
            self.transport.publish,
            settings.gateway.greenhouse_uid,
            settings.nodes_health.heartbeat_interval_s,
            settings.nodes_health.offline_after_missed,
        )
        ing = settings.ingest
        self.sequences = NodeSequences(self.db, self.clock, self.metrics)
        self.writer = TelemetryWriter(
            self.db, self.clock, self.metrics, ing.batch_size, ing.flush_interval_ms / 1000.0, ing.queue_max
        )
        self.ingest = Ingest(
            self.registry,
            self.alerts,
            self.writer,
            self.latest,
            self.clock,
            self.metrics,
            ClockSyncProbe(self.clock.monotonic, assume_synced=settings.is_demo),
            ing.max_future_skew_s,
            self.sequences,
        )
        self.storage = StorageGuard(
            self.db, self.alerts, self.writer, self.clock, self.metrics, settings.storage, settings.gateway.data_dir
        )
        self.ready = asyncio.Event()
        self._corruption = asyncio.Event()
        self.started_mono = self.clock.monotonic()
        self.started_wall = time.time()
        self.extra_services: dict[str, Service] = {}
        self._storage_failures: dict[str, int] = {}
        self.web_port: int | None = None
        self.mqtt_port: int = settings.broker.port

    def add_service(self, name: str, service: Service) -> None:
        """Supervise an extra long-running coroutine (simulated nodes, sync, …)."""
        self.extra_services[name] = service

    async def run(self) -> None:
        """Start everything in order and run until cancelled or a service crashes."""
        from drivers.hardware import open_hardware
        from drivers.serial_link import SerialLink
        from gateway.web.server import WebServer

        storage = self.settings.storage
        self.storage.prepare()
        recovered = await open_or_recover(self.db, on_corrupt=storage.on_corrupt,
                                          check_max_bytes=storage.quick_check_max_bytes)
        try:
            # The local sequence marks before anything writes: the uplink's rollback check compares them.
            self.db_start = await capture_start(self.db)
            web = WebServer(self)
            # A production start with hardware missing fails here, loudly; it never falls back to fakes.
            self.hardware = await asyncio.to_thread(open_hardware, hardware_config(self.settings.hardware))
        except BaseException:
            await self.db.close()  # an open connection's thread would keep the failed process alive
            raise
        self.db.on_corruption = self._db_corrupted
        try:
            if recovered is not None:
                await self.alerts.raise_alert("infra_db_corrupt", details={
                    "reason": recovered.reason[:500], "moved_to": list(recovered.moved),
                    "generation": recovered.new_generation})
            await self.registry.apply_config(self.settings.zones, self.settings.nodes)
            await self.sequences.load()
            await self._build_safety()
            self.router.on(TopicKind.NODE_HELLO, self.registry.on_hello)
            self.router.on(TopicKind.HEARTBEAT, self.ingest.identified(self.registry.on_heartbeat))
            self.router.on(TopicKind.LWT, self.registry.on_status)
            self.router.on(TopicKind.TELEMETRY, self.ingest.on_telemetry)
            self.router.on(TopicKind.COMMAND_RESPONSE, self.ingest.identified(self.commands.on_response))
            # The broker accepts connections before the router runs: early messages wait in its queue.
            await self.broker.start()
            self.mqtt_port = self.broker.port
            log.info("MQTT broker listening on %s:%s", self.settings.broker.host, self.broker.port)
            await self.registry.republish_configs()
            resent = await self.commands.resend_in_flight()
            if resent:
                log.info("re-sent %d in-flight commands after restart", resent)
            self.web_port = await web.start()
            log.info("web on http://%s:%s", self.settings.web.host, self.web_port)
            async with asyncio.TaskGroup() as tg:
                services: dict[str, Service] = {
                    "router": self.router.run,
                    "writer": self.writer.run,
                    "node_supervisor": self.registry.supervise,
                    "housekeeping": self._housekeeping,
                    "storage_guard": self.storage.run,
                    "command_sweeper": lambda: self.commands.sweeper(self.settings.commands.sweep_interval_s),
                    "safety_loop": self.safety.run,
                    "relay_watchdog": self.safety.watchdog.run,
                    "automation": self.automation.run,
                    "upstream_sync": self.sync.run,
                    "db_integrity": self._db_integrity,
                    **self.extra_services,
                }
                for port in self.settings.hardware.serial:
                    link = SerialLink(
                        port.port, port.baudrate, self.transport.on_serial, self.clock, name=f"serial {port.port}"
                    )
                    self.transport.add_link(link)
                    services[f"serial:{port.port}"] = link.run
                for name, service in services.items():
                    tg.create_task(self._supervised(name, service), name=name)
                # Long-lived start-up objects out of the collector's way: full collections of a
                # large heap stalled the loop for 50-150 ms.
                gc.freeze()
                self.ready.set()
                await self._resolve_crashes()
                log.info("gateway %s ready", self.settings.gateway.id)
        finally:
            await self._shutdown(web)

    async def _build_safety(self) -> None:
        from drivers.sdnotify_client import SystemdNotifier
        from gateway.safety.channels import build_channels
        from gateway.safety.gate import SafetyGate
        from gateway.safety.service import SafetyService
        from gateway.safety.usage import UsageLogger
        from gateway.water.service import WaterService

        zone_ids = self.registry.zone_uids()
        channels = build_channels(self.settings, zone_ids, self.hardware)
        watchdog = self.hardware.make_watchdog(self.clock, SystemdNotifier())
        # The gate alone gets the relays (through the channels) and the publisher of node commands.
        self.gate = SafetyGate(
            channels, self.db, self.alerts, self.latest, self.clock, self.metrics, self.settings.safety,
            self.transport.publish, self.registry, self.settings.gateway.greenhouse_uid, watchdog,
        )
        self.safety = SafetyService(
            self.gate, self.alerts, self.latest, self.clock, self.metrics, self.settings.safety.poll_hz,
            UsageLogger(self.db, self.clock), watchdog,
        )
        await self.safety.load()
        await self._alert_unmonitored_pumps(channels)
        if self.settings.no_external_watchdog:
            log.warning("no external relay watchdog fitted: only the in-process watchdog and systemd remain")
            await self.alerts.raise_alert("infra_no_external_watchdog", details={"heartbeat_pin": None})
        else:
            await self.alerts.resolve("infra_no_external_watchdog")
        self.commands = CommandService(
            self.db, self.alerts, self.registry, self.clock, self.metrics, self.gate,
            self.settings.commands.timeout_s, on_error=self.safety.on_command_error,
        )
        zones = {z.uid: (zone_ids[z.uid], z.water_cycle) for z in self.settings.zones}
        self.water = WaterService(
            zones, self.gate, self.db, self.alerts, self.latest, self.clock, self.settings.gateway.timezone
        )
        await self.water.load()
        from gateway.upstream import UpstreamSync

        self.sync = UpstreamSync(self)
        from gateway.automation.service import AutomationService

        self.automation = AutomationService(
            self.db,
            self.alerts,
            self.commands,
            _AutomationZoneState(self),
            self.clock,
            zones=self.settings.zones,
            recipes=self.settings.recipes,
            timezone=self.settings.gateway.timezone,
            config=self.settings.automation,
            metrics=self.metrics,
        )
        # The scheduler drives the water-cycle/recirculation ticks like every other periodic job.
        self.automation.register_periodic("water_cycle", self.water.tick, self.water.tick_s, run_at_start=True)

    async def _alert_unmonitored_pumps(self, channels: list[Any]) -> None:
        """A relay pump with no current monitor has no overcurrent or stuck-on protection: say so, never silently."""
        for ch in channels:
            if ch.relay is not None and ch.monitor is None:
                log.warning("pump %s has no current monitor: no overcurrent/stuck-on protection", ch.pump_id)
                await self.alerts.raise_alert(
                    "infra_pump_unmonitored", zone_id=ch.zone_id, scope=ch.channel, details={"pump": ch.pump_id}
                )
            elif ch.relay is not None:
                await self.alerts.resolve("infra_pump_unmonitored", zone_id=ch.zone_id, scope=ch.channel)

    async def _supervised(self, name: str, service: Service) -> None:
        while True:
            failures = self._storage_failures.get(name, 0)
            try:
                await self._run_watching_recovery(name, service, failures)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not _storage_error_only(exc) or is_corruption(exc):
                    log.exception("service %s crashed", name)
                    if is_corruption(exc):  # SQLITE_CORRUPT at run time: the next start moves the file aside
                        mark_corrupt(self.settings.db_path, f"service {name}: {exc!r}")
                    await self._record_crash(name, exc)
                    raise ServiceCrashed(f"service {name} crashed: {exc!r}") from exc
                # A SQLite error (disk full, I/O) is the disk's fault, not the service's: restarting the process
                # would only fail again. Log once, restart the service in place with backoff.
                failures += 1
                self._storage_failures[name] = failures
                self.metrics.service_storage_restarts.labels(service=name).inc()
                self.storage.note_error(_first_storage_error(exc))
                delay = min(30.0, 0.5 * 2 ** min(failures - 1, 6))
                if failures == 1:
                    log.error("service %s hit a storage error, restarting it with backoff: %s", name,
                              _first_storage_error(exc))
                await self.clock.sleep(delay)
                continue
            raise ServiceCrashed(f"service {name} stopped unexpectedly")

    async def _run_watching_recovery(self, name: str, service: Service, failures: int) -> None:
        """Run the service; after storage failures, say once that it recovered when it has run for a while."""
        if not failures:
            await service()
            return
        task = asyncio.ensure_future(service())
        try:
            await asyncio.wait({task}, timeout=30.0)
            if not task.done():
                log.info("service %s recovered after %d storage error(s)", name, failures)
                self._storage_failures[name] = 0
            await task
        except asyncio.CancelledError:  # shutdown: the service ends before we do
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise

    def _db_corrupted(self, exc: BaseException) -> None:
        """SQLITE_CORRUPT at run time: leave the marker and restart, so the start moves the file aside."""
        log.critical("database %s reports corruption: %r; restarting to move it aside", self.settings.db_path, exc)
        mark_corrupt(self.settings.db_path, repr(exc))
        self._corruption.set()

    async def _db_integrity(self) -> None:
        if self.db.check_pending:  # too large to check before starting: check it now, alongside
            try:
                await self.db.check_in_background()
            except Exception as exc:  # reported through on_corruption (marker set, restart below)
                log.error("background quick_check failed: %r", exc)
        await self._corruption.wait()
        raise RuntimeError("the database is corrupt (marked; the next start moves it aside)")

    async def _record_crash(self, name: str, exc: BaseException) -> None:
        """Leave an alert behind (it goes upstream after the restart systemd does next)."""
        try:
            await asyncio.wait_for(
                self.alerts.raise_alert(f"infra_service_down_{name}", details={"error": repr(exc)[:500]}), 2.0
            )
        except Exception:
            log.exception("could not record the crash of %s", name)

    async def _resolve_crashes(self) -> None:
        for alert in await self.alerts.active():
            if alert["code"].startswith("infra_service_down_"):
                await self.alerts.resolve(alert["code"], zone_id=alert["zone_id"], scope=alert["scope"], by="restart")

    async def _probe_broker(self) -> None:
        """infra_mqtt_down while the broker's listener is not serving (no traffic: nodes see nothing)."""
        servers = getattr(self.broker.broker, "_servers", {})
        instance = getattr(servers.get("default"), "instance", None)
        serving = instance is not None and bool(instance.is_serving())
        if not serving:
            await self.alerts.raise_alert("infra_mqtt_down", details={"port": self.mqtt_port})
            return
        await self.alerts.resolve("infra_mqtt_down")

    async def _housekeeping(self) -> None:
        probes = 0
        while True:
            if probes % 6 == 0:
                await self._probe_broker()
            probes += 1
            self.metrics.broker_clients.set(len(self.broker.clients()))
            self.metrics.db_size_bytes.set(await self.db.size_bytes())
            self.metrics.process_rss_bytes.set(_rss_bytes())
            self.sync.update_metrics()
            for reason, count in list(self.broker.broker.refusals.items()):
                counter = self.metrics.broker_refusals.labels(reason=reason)
                counter.inc(count)
                self.broker.broker.refusals[reason] -= count
                if reason == "acl_gateway_topic" and count:
                    await self._alert_command_bypass()
            await self.clock.sleep(5.0)

    async def _alert_command_bypass(self) -> None:
        """An MQTT client tried to publish a command or config (refused): the operator should know who."""
        broker = self.broker.broker
        who, topic = broker.last_refused.get("acl_gateway_topic", ("?", "?"))
        details = {"refused_total": broker.counters["acl_gateway_topic"], "last_client": who, "last_topic": topic}
        await self.alerts.raise_alert("infra_mqtt_command_refused", details=details)

    async def _shutdown(self, web: Any) -> None:
        log.info("gateway stopping")
        watchdog = getattr(getattr(self, "safety", None), "watchdog", None)
        if watchdog is not None:
            watchdog.stopping()
        try:
            # Every coil de-energised: the NC recirculation pump runs, every NO pump stops.
            await asyncio.to_thread(self.hardware.close)
        except Exception as exc:
            log.error("releasing hardware failed: %r", exc)
        for step in (self.broker.stop, self.router.dispatch_pending, self.writer.flush, web.stop, self.db.close):
            try:
                await asyncio.wait_for(step(), 3.0)
            except Exception as exc:
                log.error("shutdown step %s failed: %r", getattr(step, "__name__", step), exc)
        log.info("gateway stopped")

    def uptime_s(self) -> float:
        """Seconds since the gateway object was built."""
        return self.clock.monotonic() - self.started_mono


class _AutomationZoneState:
    """Dosing mixes in only while the solution circulates in NORMAL_RECIRC and nothing is locked."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw

    def circulating(self, zone_id: int) -> bool:
        phase_ok = all(
            zw.state.phase.value == "NORMAL_RECIRC" for zw in self._gw.water.zones.values() if zw.zone_id == zone_id
        )
        return phase_ok and bool(self._gw.safety.circulating(zone_id))

    def locked(self, zone_id: int) -> bool:
        return bool(self._gw.safety.locked(zone_id))


def _storage_error_only(exc: BaseException) -> bool:
    """True when ``exc`` is a SQLite OperationalError, or a group made only of them (a TaskGroup's)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_storage_error_only(e) for e in exc.exceptions)
    return isinstance(exc, sqlite3.OperationalError)


def _first_storage_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")
