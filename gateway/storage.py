"""Disk-full protection: a reserve file, the storage level, the disk alerts and the gap left by a full disk.

* A reserve file (``storage.reserve_bytes``) is pre-allocated next to the database. When SQLite reports the
  disk full it is deleted, so that the alert, the commits already waiting and the gap record still fit; it
  is allocated again once there is room for it twice over.
* ``level``: ``ok`` / ``high`` (disk use ≥ ``warn_pct``) / ``critical`` (≥ ``critical_pct``) / ``full``
  (commits fail for lack of space). /api/status shows it as ``storage_level``, /healthz answers 503 while full.
* ``infra_disk_low`` (scope ``disk``) follows the level; ``infra_disk_full`` is raised while commits fail.
  Alerts that cannot be written stay in memory (``gateway.alerts``) and are written here once storage is back.
* When commits succeed again, the outage is recorded as a telemetry gap (``sync_gaps`` row and a
  ``TELEMETRY_GAP`` zone event that goes upstream), the same shape as ``sync/retention.py``'s gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.store import events
from gateway.store.db import Database
from sync.storage_errors import storage_error_text

if TYPE_CHECKING:
    from gateway.settings import StorageSection
    from gateway.writer import TelemetryWriter

log = logging.getLogger(__name__)

RESERVE_NAME = "storage-reserve.bin"
FULL_MARKER_NAME = "storage-full-since"  # survives a restart while full, so the gap starts when the disk filled
DISK_SCOPE = "disk"  # infra_disk_low from the filesystem; retention's (byte budget) has scope ""
_NO_SPACE_MARKERS = ("full", "no space", "disk i/o")


class StorageLevel(StrEnum):
    """How much room the data directory has left."""

    OK = "ok"
    HIGH = "high"
    CRITICAL = "critical"
    FULL = "full"


def is_no_space(error: BaseException | str | None) -> bool:
    """True for SQLite's "database or disk is full", ENOSPC and the I/O errors a full disk causes."""
    if error is None:
        return False
    if isinstance(error, OSError) and error.errno == 28:
        return True
    text = (storage_error_text(error) if isinstance(error, BaseException) else error).lower()
    return any(marker in text for marker in _NO_SPACE_MARKERS)


class StorageGuard:
    """Watches the data directory and the writer; see the module docstring."""

    def __init__(
        self,
        db: Database,
        alerts: Alerts,
        writer: TelemetryWriter,
        clock: Clock,
        metrics: Metrics,
        settings: StorageSection,
        data_dir: Path,
    ) -> None:
        self._db = db
        self._alerts = alerts
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._data_dir = data_dir
        self.reserve_path = data_dir / RESERVE_NAME
        self.marker_path = data_dir / FULL_MARKER_NAME
        self.full_since: float | None = None
        self.used_pct: float | None = None
        self.free_bytes: int | None = None
        self.gaps_recorded = 0
        self._committed_at_full = 0
        self._pending_gap: tuple[float, float, int] | None = None
        self._disk_level = StorageLevel.OK
        self._alerted_level = StorageLevel.OK
        self._wake = asyncio.Event()

    # ---- state --------------------------------------------------------------------------------
    @property
    def full(self) -> bool:
        """Commits are failing for lack of space."""
        return self.full_since is not None

    @property
    def level(self) -> StorageLevel:
        """``full`` while commits fail, else the level of the disk use."""
        return StorageLevel.FULL if self.full else self._disk_level

    def status(self) -> dict[str, object]:
        """JSON-ready state for /api/status."""
        return {
            "level": self.level.value,
            "used_pct": self.used_pct,
            "free_bytes": self.free_bytes,
            "full_since": self.full_since,
            "reserve_bytes": self._reserve_size(),
            "unstored_alerts": self._alerts.unstored,
            "gaps_recorded": self.gaps_recorded,
        }

    def note_error(self, error: BaseException | str) -> None:
        """A write failed somewhere: if it is a full disk, the guard reacts at once (not at its next poll)."""
        if is_no_space(error):
            self._wake.set()

    # ---- the reserve file ---------------------------------------------------------------------
    def _reserve_size(self) -> int:
        try:
            return self.reserve_path.stat().st_size
        except OSError:
            return 0

    def release_reserve(self) -> int:
        """Delete the reserve file; returns the bytes freed."""
        size = self._reserve_size()
        if size:
            try:
                self.reserve_path.unlink()
            except OSError as exc:
                log.error("could not release the storage reserve %s: %r", self.reserve_path, exc)
                return 0
            log.warning("released the %d-byte storage reserve %s", size, self.reserve_path)
        return size

    def ensure_reserve(self) -> bool:
        """Allocate the reserve file when it is missing and there is room for it twice over."""
        want = self._settings.reserve_bytes
        if want <= 0 or self._reserve_size() >= want:
            return False
        try:
            if shutil.disk_usage(self._data_dir).free < 2 * want:
                return False
            tmp = self.reserve_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, want)  # real blocks, not a sparse file
            finally:
                os.close(fd)
            tmp.replace(self.reserve_path)
        except OSError as exc:
            log.warning("could not allocate the storage reserve: %r", exc)
            self.reserve_path.with_suffix(".tmp").unlink(missing_ok=True)
            return False
        log.info("storage reserve of %d bytes allocated at %s", want, self.reserve_path)
        return True

    def prepare(self) -> None:
        """Before the database opens: on a (nearly) full disk free the reserve so start-up can write."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        try:
            free = shutil.disk_usage(self._data_dir).free
        except OSError:
            return
        if free < max(self._settings.reserve_bytes // 2, 1024 * 1024) and self.release_reserve():
            log.warning("disk nearly full at start-up (%d bytes free): reserve released", free)
            return
        self.ensure_reserve()

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll the disk and the writer; faster while full."""
        while True:
            await self.check_once()
            interval = min(0.5, self._settings.poll_s) if self.full else self._settings.poll_s
            # asyncio.timeout: wait_for (3.11) swallows a cancellation that lands as the event fires.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()

    async def check_once(self) -> None:
        """One pass: disk use, full/recovered transitions, alerts, the gap, the reserve."""
        await self._measure()
        error = self._writer.last_commit_error
        if not self.full and (is_no_space(error) or self._no_room()):
            await self._enter_full(str(error or f"{self.free_bytes} bytes free on the data filesystem"))
        elif self.full and error is None and self._has_room() and (
            self._writer.committed > self._committed_at_full or self._writer.depth == 0
        ):
            self._leave_full()
        if not self.full and self._pending_gap is None and self._has_room():
            since = self._marker_since()
            if since is not None:  # the disk filled up before a restart and has room now
                self._pending_gap = (since, self._clock.time(), self._writer.depth)
        if self._pending_gap is not None:
            await self._record_gap()
        if self._alerts.unstored and not is_no_space(self._writer.last_commit_error):
            with contextlib.suppress(sqlite3.OperationalError):  # still no room: they stay visible from memory
                await self._alerts.flush_unstored()
        await self._level_alerts()
        if not self.full and self._pending_gap is None and not self._alerts.unstored:
            await asyncio.to_thread(self.ensure_reserve)
        self._metrics.storage_full.set(int(self.full))
        if self.used_pct is not None:
            self._metrics.storage_used_ratio.set(self.used_pct / 100.0)

    async def _measure(self) -> None:
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, self._data_dir)
        except OSError:
            return
        # The reserve is room we keep for ourselves: it counts as free.
        free = usage.free + self._reserve_size()
        self.free_bytes = free
        self.used_pct = round(100.0 * (usage.total - free) / usage.total, 1) if usage.total else None
        pct = self.used_pct or 0.0
        s = self._settings
        self._disk_level = (
            StorageLevel.CRITICAL if pct >= s.critical_pct else StorageLevel.HIGH if pct >= s.warn_pct
            else StorageLevel.OK
        )

    def _no_room(self) -> bool:
        """Nothing left at all (e.g. a start on a disk that filled up before): full before a commit even fails."""
        return self.free_bytes is not None and self.free_bytes < 64 * 1024

    def _has_room(self) -> bool:
        """Real room again (not just the released reserve being eaten): at least the reserve's size is free."""
        return (self.free_bytes or 0) >= max(self._settings.reserve_bytes, 1024 * 1024)

    def _marker_since(self) -> float | None:
        try:
            return float(self.marker_path.read_text())
        except (OSError, ValueError):
            return None

    async def _enter_full(self, error: str) -> None:
        now = self._clock.time()
        earlier = self._marker_since()  # full already before a restart
        self.full_since = min(now, earlier) if earlier is not None else now
        self._committed_at_full = self._writer.committed
        log.error("storage full, telemetry cannot be committed (%s): releasing the reserve", error)
        self.release_reserve()
        if earlier is None:
            try:  # a few bytes, written after the reserve is gone
                self.marker_path.write_text(repr(self.full_since))
            except OSError as exc:
                log.warning("could not write %s: %r", self.marker_path, exc)
        await self._alerts.raise_alert(
            "infra_disk_full",
            details={"error": error[:200], "used_pct": self.used_pct, "free_bytes": self.free_bytes,
                     "waiting_samples": self._writer.depth},
        )

    def _leave_full(self) -> None:
        assert self.full_since is not None
        now = self._clock.time()
        log.info("storage writable again after %.0f s: telemetry commits resumed", now - self.full_since)
        self._pending_gap = (self.full_since, now, self._writer.depth)
        self.full_since = None

    async def _record_gap(self) -> None:
        """The full-disk window as a telemetry gap: ``sync_gaps`` + a ``TELEMETRY_GAP`` event (local + outbox)."""
        assert self._pending_gap is not None
        first_ts, last_ts, waiting = self._pending_gap
        now = self._clock.time()
        try:
            await events.record_disk_full_gap(self._db, first_ts, last_ts, waiting, now)
        except sqlite3.OperationalError as exc:
            log.warning("could not record the full-disk gap yet: %s", storage_error_text(exc))
            return
        self._pending_gap = None
        self.marker_path.unlink(missing_ok=True)
        self.gaps_recorded += 1
        log.warning("telemetry gap recorded: disk full from %.0f to %.0f (%.0f s)", first_ts, last_ts,
                    last_ts - first_ts)
        await self._alerts.resolve("infra_disk_full", by="storage recovered")

    async def _level_alerts(self) -> None:
        level = self._disk_level
        if level is self._alerted_level:
            return
        if level is StorageLevel.OK:
            await self._alerts.resolve("infra_disk_low", scope=DISK_SCOPE)
        else:
            await self._alerts.raise_alert(
                "infra_disk_low", scope=DISK_SCOPE,
                details={"level": level.value, "used_pct": self.used_pct, "free_bytes": self.free_bytes,
                         "path": str(self._data_dir)},
            )
        log.warning("disk use of %s: %s %% (%s)", self._data_dir, self.used_pct, level.value)
        self._alerted_level = level
