"""The supervisor of a composed gateway: one TaskGroup over every service; ordered start, fail-safe finally.

What runs is built by ``gateway.compose``; this module only starts, restarts (storage errors), records crashes
and releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
from collections.abc import Awaitable, Callable

from gateway.services import Services
from gateway.store.db import is_corruption, mark_corrupt

log = logging.getLogger(__name__)

Service = Callable[[], Awaitable[None]]


class ServiceCrashed(RuntimeError):
    """A supervised service ended unexpectedly; the process exits non-zero so systemd restarts it."""


class Gateway:
    """Supervises the services ``gateway.compose`` built: ordered start, one TaskGroup, fail-safe release."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.ready = services.ready
        self.extra_services: dict[str, Service] = {}
        self._storage_failures: dict[str, int] = {}
        self.web_port: int | None = None

    def add_service(self, name: str, service: Service) -> None:
        """Supervise an extra long-running coroutine (a test's probe, a bench's load…)."""
        self.extra_services[name] = service

    async def run(self) -> None:
        """Start everything in order and run until cancelled or a service crashes; release the hardware last."""
        s = self.services
        try:
            # The broker accepts connections before the router runs: early messages wait in its queue.
            await s.broker.start()
            log.info("MQTT broker listening on %s:%s", s.settings.broker.host, s.broker.port)
            await s.registry.republish_configs()
            resent = await s.commands.resend_in_flight()
            if resent:
                log.info("re-sent %d in-flight commands after restart", resent)
            self.web_port = await s.web.start()
            log.info("web on http://%s:%s", s.settings.web.host, self.web_port)
            async with asyncio.TaskGroup() as tg:
                for name, service in self._services().items():
                    tg.create_task(self._supervised(name, service), name=name)
                # Long-lived start-up objects out of the collector's way: full collections of a
                # large heap stalled the loop for 50-150 ms.
                gc.freeze()
                self.ready.set()
                await self._resolve_crashes()
                log.info("gateway %s ready", s.settings.gateway.id)
        finally:
            await self._shutdown()

    def _services(self) -> dict[str, Service]:
        """Every supervised coroutine by name (the name is the task's and the crash alert's)."""
        s = self.services
        services: dict[str, Service] = {
            "router": s.router.run,
            "writer": s.writer.run,
            "node_supervisor": s.registry.supervise,
            "housekeeping": s.housekeeping.run,
            "storage_guard": s.storage.run,
            "command_sweeper": lambda: s.commands.sweeper(s.settings.commands.sweep_interval_s),
            "safety_loop": s.safety.run,
            "relay_watchdog": s.watchdog.run,
            "automation": s.automation.run,
            "upstream_sync": s.sync.run,
            "db_integrity": self._db_integrity,
        }
        if s.simulation is not None:
            services["greenhouse_sim"] = s.simulation.run
        services.update(self.extra_services)
        for link in s.serial_links:
            services[f"serial:{link.port}"] = link.run
        return services

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
                        mark_corrupt(self.services.settings.db_path, f"service {name}: {exc!r}")
                    await self._record_crash(name, exc)
                    raise ServiceCrashed(f"service {name} crashed: {exc!r}") from exc
                # A SQLite error (disk full, I/O) is the disk's fault, not the service's: restarting the process
                # would only fail again. Log once, restart the service in place with backoff.
                failures += 1
                self._storage_failures[name] = failures
                self.services.metrics.service_storage_restarts.labels(service=name).inc()
                self.services.storage.note_error(_first_storage_error(exc))
                delay = min(30.0, 0.5 * 2 ** min(failures - 1, 6))
                if failures == 1:
                    log.error("service %s hit a storage error, restarting it with backoff: %s", name,
                              _first_storage_error(exc))
                await self.services.clock.sleep(delay)
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

    async def _db_integrity(self) -> None:
        if self.services.db.check_pending:  # too large to check before starting: check it now, alongside
            try:
                await self.services.db.check_in_background()
            except Exception as exc:  # reported through on_corruption (marker set, restart below)
                log.error("background quick_check failed: %r", exc)
        await self.services.corrupted.wait()
        raise RuntimeError("the database is corrupt (marked; the next start moves it aside)")

    async def _record_crash(self, name: str, exc: BaseException) -> None:
        """Leave an alert behind (it goes upstream after the restart systemd does next)."""
        try:
            await asyncio.wait_for(
                self.services.alerts.raise_alert(f"infra_service_down_{name}", details={"error": repr(exc)[:500]}), 2.0
            )
        except Exception:
            log.exception("could not record the crash of %s", name)

    async def _resolve_crashes(self) -> None:
        alerts = self.services.alerts
        for alert in await alerts.active():
            if alert["code"].startswith("infra_service_down_"):
                await alerts.resolve(alert["code"], zone_id=alert["zone_id"], scope=alert["scope"], by="restart")

    async def _shutdown(self) -> None:
        s = self.services
        log.info("gateway stopping")
        s.watchdog.stopping()
        try:
            # Every coil de-energised: the NC recirculation pump runs, every NO pump stops.
            await asyncio.to_thread(s.hardware.close)
        except Exception as exc:
            log.error("releasing hardware failed: %r", exc)
        for step in (s.broker.stop, s.router.dispatch_pending, s.writer.flush, s.web.stop, s.db.close):
            try:
                await asyncio.wait_for(step(), 3.0)
            except Exception as exc:
                log.error("shutdown step %s failed: %r", getattr(step, "__name__", step), exc)
        log.info("gateway stopped")


def _storage_error_only(exc: BaseException) -> bool:
    """True when ``exc`` is a SQLite OperationalError, or a group made only of them (a TaskGroup's)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_storage_error_only(e) for e in exc.exceptions)
    return isinstance(exc, sqlite3.OperationalError)


def _first_storage_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
