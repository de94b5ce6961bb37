"""The composition root: Settings in, every service built once, in dependency order, out as a frozen bundle.

Only this module wires services to each other; nothing is re-wired after ``build_services`` returns. The
order follows the dependencies:

1. the core, built without I/O: metrics, database handle, alerts, router, broker, node transport, registry,
   sequences, telemetry writer, ingest, storage guard;
2. the database opened (or recovered) and the hardware opened: a production start with hardware missing
   fails here, loudly, and never falls back to fakes;
3. zones and nodes from the config, then the pumps: channels, watchdog, the safety gate (the one door to
   every pump), the safety loop, commands, the water cycle;
4. upstream sync, automation, housekeeping, serial links, the web and (demo) the simulated greenhouse;
5. the router's handlers, last, once every handler exists.

``gateway.app.Gateway`` then only supervises what this built.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from drivers.hardware import Hardware, open_hardware
from drivers.sdnotify_client import SystemdNotifier
from drivers.serial_link import SerialLink
from drivers.watchdog import RelayWatchdog
from gateway.alerts import Alerts
from gateway.app import Gateway
from gateway.automation.service import AutomationService
from gateway.broker.acl import TopicACL
from gateway.broker.auth import Account, Authenticator
from gateway.broker.limits import BrokerLimits
from gateway.broker.server import EmbeddedBroker
from gateway.clock import Clock, SystemClock
from gateway.commands import CommandService
from gateway.housekeeping import Housekeeping
from gateway.ingest import Ingest
from gateway.prometheus import Metrics
from gateway.readings import LatestReadings
from gateway.registry import Registry
from gateway.router import Router
from gateway.safety.channels import PumpChannel, build_channels
from gateway.safety.gate import SafetyGate
from gateway.safety.service import SafetyService
from gateway.safety.usage import UsageLogger
from gateway.sequences import NodeSequences
from gateway.services import Services
from gateway.settings import Settings
from gateway.sim.demo import DemoSimulation
from gateway.sim.wiring import SimServices
from gateway.storage import StorageGuard
from gateway.store.db import Database, mark_corrupt, open_or_recover
from gateway.timesync import ClockSyncProbe
from gateway.transport import NodeTransport
from gateway.upstream.config_merge import ConfigApplier
from gateway.upstream.downlink_commands import UpstreamCommands
from gateway.upstream.sync import UpstreamSync
from gateway.water.service import WaterService
from gateway.web.context import WebServices
from gateway.web.server import WebServer
from gateway.writer import TelemetryWriter
from sync.generation import capture_start

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Core:
    """What step 1 builds: no I/O, nothing opened."""

    metrics: Metrics
    db: Database
    alerts: Alerts
    latest: LatestReadings
    router: Router
    broker: EmbeddedBroker
    transport: NodeTransport
    registry: Registry
    sequences: NodeSequences
    writer: TelemetryWriter
    ingest: Ingest
    storage: StorageGuard


@dataclass(frozen=True, slots=True)
class _Pumps:
    """What step 3 builds: everything that switches or asks to switch a pump."""

    gate: SafetyGate
    watchdog: RelayWatchdog
    safety: SafetyService
    commands: CommandService
    water: WaterService


class Circulation:
    """Dosing mixes in only while the solution circulates in normal recirculation and nothing is locked."""

    def __init__(self, water: WaterService, safety: SafetyService) -> None:
        self._water = water
        self._safety = safety

    def circulating(self, zone_id: int) -> bool:
        """No water change under way, and the recirculation pump runs unlocked."""
        return self._water.in_normal_recirc(zone_id) and self._safety.circulating(zone_id)

    def locked(self, zone_id: int) -> bool:
        """Any pump of the zone is locked by a safety trip."""
        return self._safety.locked(zone_id)


async def build_gateway(settings: Settings, clock: Clock | None = None, simulate: bool = False) -> Gateway:
    """Build every service and the supervisor over them; ``Gateway.run()`` starts them and owns their release."""
    return Gateway(await build_services(settings, clock, simulate=simulate))


async def build_services(settings: Settings, clock: Clock | None = None, *, simulate: bool = False) -> Services:
    """Open the database and the hardware and build every service on them (released again if this fails)."""
    clock = clock or SystemClock()
    started_mono = clock.monotonic()
    core = _build_core(settings, clock)
    storage = settings.storage
    core.storage.prepare()
    recovered = await open_or_recover(core.db, on_corrupt=storage.on_corrupt,
                                      check_max_bytes=storage.quick_check_max_bytes)
    try:
        # The local sequence marks before anything writes: the uplink's rollback check compares them.
        db_start = await capture_start(core.db)
        hardware = await asyncio.to_thread(open_hardware, settings.hardware)
    except BaseException:
        await core.db.close()  # an open connection's thread would keep the failed process alive
        raise
    corrupted = asyncio.Event()
    core.db.on_corruption = lambda exc: _corruption_seen(settings, corrupted, exc)
    try:
        if recovered is not None:
            await core.alerts.raise_alert("infra_db_corrupt", details={
                "reason": recovered.reason[:500], "moved_to": list(recovered.moved),
                "generation": recovered.new_generation})
        await core.registry.apply_config(settings.zones, settings.nodes)
        await core.sequences.load()
        pumps = await _build_pumps(settings, clock, core, hardware)
        automation = AutomationService(
            core.db, core.alerts, pumps.commands, Circulation(pumps.water, pumps.safety), clock,
            zones=settings.zones, recipes=settings.recipes, timezone=settings.gateway.timezone,
            config=settings.automation, metrics=core.metrics,
        )
        # The scheduler drives the water-cycle/recirculation ticks like every other periodic job.
        automation.register_periodic("water_cycle", pumps.water.tick, pumps.water.tick_s, run_at_start=True)
        config = ConfigApplier(settings.zones, core.registry, pumps.water, automation, core.alerts)
        sync = UpstreamSync(
            settings.upstream, settings.gateway.id, settings.db_path, core.db, db_start, clock, core.alerts,
            core.metrics, apply_config=config.apply, reject_config=config.rejected,
            submit_command=UpstreamCommands(pumps.commands).submit,
        )
        links = tuple(
            SerialLink(port.port, port.baudrate, core.transport.on_serial, clock, name=f"serial {port.port}")
            for port in settings.hardware.serial
        )
        for link in links:
            core.transport.add_link(link)
        simulation = None
        if simulate:
            simulation = DemoSimulation(SimServices(settings, clock, core.db, core.registry, hardware, core.broker,
                                                    automation, pumps.water))
        ready = asyncio.Event()
        web = WebServer(WebServices(
            settings, clock, core.metrics, core.db, core.alerts, core.registry, core.sequences, pumps.commands,
            core.ingest, core.writer, core.router, core.broker, core.storage, pumps.safety, pumps.water, sync,
            automation, simulation, ready, lambda: clock.monotonic() - started_mono,
        ))
        _route(core, pumps.commands)
        return Services(
            settings=settings, clock=clock, metrics=core.metrics, db=core.db, alerts=core.alerts,
            latest=core.latest, router=core.router, broker=core.broker, transport=core.transport,
            registry=core.registry, sequences=core.sequences, writer=core.writer, ingest=core.ingest,
            storage=core.storage, hardware=hardware, gate=pumps.gate, watchdog=pumps.watchdog, safety=pumps.safety,
            commands=pumps.commands, water=pumps.water, sync=sync, automation=automation,
            housekeeping=Housekeeping(core.broker, core.db, core.alerts, core.metrics, clock, sync,
                                      settings.broker.port),
            serial_links=links, web=web, simulation=simulation, ready=ready, corrupted=corrupted,
            started_mono=started_mono,
        )
    except BaseException:
        try:
            await asyncio.to_thread(hardware.close)  # every coil back in its fail-safe state
        finally:
            await core.db.close()
        raise


def _corruption_seen(settings: Settings, corrupted: asyncio.Event, exc: BaseException) -> None:
    """SQLITE_CORRUPT at run time: leave the marker; the supervisor restarts, so the start moves the file aside."""
    log.critical("database %s reports corruption: %r; restarting to move it aside", settings.db_path, exc)
    mark_corrupt(settings.db_path, repr(exc))
    corrupted.set()


def _build_core(settings: Settings, clock: Clock) -> _Core:
    """Step 1: the message path and the stores, nothing opened yet."""
    metrics = Metrics()
    db = Database(settings.db_path, settings.ingest.synchronous)
    alerts = Alerts(db, clock, metrics)
    latest = LatestReadings()
    ing = settings.ingest
    # The one queue between broker and handlers holds what the broker's and the router's queues held in series.
    router = Router(metrics, clock, settings.broker.broadcast_queue_max + ing.router_queue_max,
                    settings.broker.max_payload_bytes)
    accounts = [Account(u.username, u.password_hash, u.role) for u in settings.broker.users]
    broker = EmbeddedBroker(
        settings.broker.host,
        settings.broker.port,
        router,
        Authenticator(accounts, settings.broker.allow_anonymous),
        TopicACL(settings.broker.allow_anonymous),
        settings.broker.max_connections,
        limits=BrokerLimits.from_settings(settings.broker),
    )
    transport = NodeTransport(broker.publish, router)
    registry = Registry(
        db,
        alerts,
        clock,
        metrics,
        transport.publish,
        settings.gateway.greenhouse_uid,
        settings.nodes_health.heartbeat_interval_s,
        settings.nodes_health.offline_after_missed,
    )
    sequences = NodeSequences(db, clock, metrics)
    writer = TelemetryWriter(db, clock, metrics, ing.batch_size, ing.flush_interval_ms / 1000.0, ing.queue_max)
    ingest = Ingest(
        registry,
        alerts,
        writer,
        latest,
        clock,
        metrics,
        ClockSyncProbe(clock.monotonic, assume_synced=settings.is_demo),
        ing.max_future_skew_s,
        sequences,
    )
    storage = StorageGuard(db, alerts, writer, clock, metrics, settings.storage, settings.gateway.data_dir)
    return _Core(metrics, db, alerts, latest, router, broker, transport, registry, sequences, writer, ingest, storage)


async def _build_pumps(settings: Settings, clock: Clock, core: _Core, hardware: Hardware) -> _Pumps:
    """Step 3: the gate alone gets the relays (through the channels) and the publisher of node commands."""
    zone_ids = core.registry.zone_uids()
    channels = build_channels(settings, zone_ids, hardware)
    watchdog = hardware.make_watchdog(clock, SystemdNotifier())
    gate = SafetyGate(
        channels, core.db, core.alerts, core.latest, clock, core.metrics, settings.safety,
        core.transport.publish, core.registry, settings.gateway.greenhouse_uid, watchdog,
    )
    safety = SafetyService(
        gate, core.alerts, core.latest, clock, core.metrics, settings.safety.poll_hz, UsageLogger(core.db, clock),
        watchdog,
    )
    await safety.load()
    await _alert_unmonitored_pumps(core.alerts, channels)
    if settings.no_external_watchdog:
        log.warning("no external relay watchdog fitted: only the in-process watchdog and systemd remain")
        await core.alerts.raise_alert("infra_no_external_watchdog", details={"heartbeat_pin": None})
    else:
        await core.alerts.resolve("infra_no_external_watchdog")
    commands = CommandService(
        core.db, core.alerts, core.registry, clock, core.metrics, gate, settings.commands.timeout_s,
        on_error=safety.on_command_error,
    )
    zones = {z.uid: (zone_ids[z.uid], z.water_cycle) for z in settings.zones}
    water = WaterService(zones, gate, core.db, core.alerts, core.latest, clock, settings.gateway.timezone)
    await water.load()
    return _Pumps(gate, watchdog, safety, commands, water)


async def _alert_unmonitored_pumps(alerts: Alerts, channels: list[PumpChannel]) -> None:
    """A relay pump with no current monitor has no overcurrent or stuck-on protection: say so, never silently."""
    for ch in channels:
        if ch.relay is not None and ch.monitor is None:
            log.warning("pump %s has no current monitor: no overcurrent/stuck-on protection", ch.pump_id)
            await alerts.raise_alert(
                "infra_pump_unmonitored", zone_id=ch.zone_id, scope=ch.channel, details={"pump": ch.pump_id}
            )
        elif ch.relay is not None:
            await alerts.resolve("infra_pump_unmonitored", zone_id=ch.zone_id, scope=ch.channel)


def _route(core: _Core, commands: CommandService) -> None:
    """Step 5: each inbound topic kind to its handler (messages that arrive earlier wait in the router's queue)."""
    core.router.on_hello(core.registry.on_hello)
    core.router.on_heartbeat(core.ingest.identified(core.registry.on_heartbeat))
    core.router.on_status(core.registry.on_status)
    core.router.on_telemetry(core.ingest.on_telemetry)
    core.router.on_command_response(core.ingest.identified(commands.on_response))
