"""Downlink: config (ETag, last good copy in kv_state) and pending commands (claimed before they run)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypedDict

from sync.client import UpstreamClient, UpstreamError
from sync.config_schema import validate_config
from sync.outbox import enqueue
from sync.ports import Clock, Database, SystemClock
from sync.reachability import Reachability
from sync.storage_errors import storage_error_text
from sync.streams import COMMAND_STATUS

log = logging.getLogger(__name__)

CONFIG_KEY = "downlink.config"
ETAG_KEY = "downlink.config_etag"

class DownlinkStatus(TypedDict):
    """What the status page shows of the downlink."""

    config_version: object  # the accepted document's "version", as upstream sent it
    config_error: str | None
    config_fetched_at: float | None
    commands_error: str | None
    commands_submitted: int
    last_poll_at: float | None


OnConfig = Callable[[dict[str, object]], Awaitable[None]]
OnConfigRejected = Callable[[list[str]], Awaitable[None]]
SubmitCommand = Callable[[dict[str, object]], Awaitable[str]]


@dataclass(frozen=True)
class DownlinkSettings:
    """Polling periods."""

    config_interval_s: float = 60.0
    commands_interval_s: float = 10.0
    commands_batch: int = 50


class Downlink:
    """Pulls config and commands; hands them to the lead's hooks."""

    def __init__(
        self,
        db: Database,
        client: UpstreamClient,
        settings: DownlinkSettings | None = None,
        *,
        clock: Clock | None = None,
        reachability: Reachability | None = None,
        on_config: OnConfig | None = None,
        on_config_rejected: OnConfigRejected | None = None,
        submit_command: SubmitCommand | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.settings = settings or DownlinkSettings()
        self.clock: Clock = clock or SystemClock()
        self.reachability = reachability or Reachability(clock=self.clock)
        self.on_config = on_config
        self.on_config_rejected = on_config_rejected
        self.submit_command = submit_command
        self.config: dict[str, object] | None = None
        self._etag: str | None = None  # of the last document received, good or rejected
        self._good_etag: str | None = None
        self._status: DownlinkStatus = {"config_version": None, "config_error": None, "config_fetched_at": None,
                                        "commands_error": None, "commands_submitted": 0, "last_poll_at": None}

    async def run(self) -> None:
        """Apply the stored config, then poll config and commands forever."""
        await self.load_last_good()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._every(self.settings.config_interval_s, self.refresh_config))
            if self.submit_command is not None:
                tg.create_task(self._every(self.settings.commands_interval_s, self.poll_commands))

    async def _every(self, period: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await job()
            await self.clock.sleep(period)

    async def load_last_good(self) -> dict[str, object] | None:
        """Hand the last good config from kv_state to ``on_config`` (so a restart offline still works)."""
        row = await self.db.fetchone("SELECT value FROM kv_state WHERE key = ?", (CONFIG_KEY,))
        etag = await self.db.fetchone("SELECT value FROM kv_state WHERE key = ?", (ETAG_KEY,))
        if row is None:
            return None
        self.config = json.loads(row[0])
        self._etag = self._good_etag = etag[0] if etag else None
        self._status["config_version"] = self.config.get("version") if self.config else None
        if self.config is not None:
            await self._apply(self.config)
        return self.config

    async def refresh_config(self) -> bool:
        """Conditional GET; True if a new valid config was stored and applied."""
        try:
            fetched = await self.client.get_config(self._etag)
        except UpstreamError as exc:
            await self._contact(exc.status)
            self._status["config_error"] = str(exc)
            log.info("config pull failed: %s", exc)
            return False
        await self._contact(fetched.status)
        self._status["config_fetched_at"] = self.clock.time()
        if fetched.status == 304:
            if not str(self._status["config_error"] or "").startswith("rejected"):
                self._status["config_error"] = None  # reachable again; a rejection stays visible
            return False
        problems = validate_config(fetched.config)
        if problems:
            self._etag = fetched.etag  # do not download the same bad document every poll
            self._status["config_error"] = f"rejected: {problems[0]}"
            log.error("config from upstream rejected (%d problems): %s", len(problems), problems[:5])
            if self.on_config_rejected is not None:
                try:
                    await self.on_config_rejected(problems)
                except Exception:
                    log.exception("on_config_rejected hook failed")
            return False
        config = fetched.config
        assert config is not None  # validate_config refuses anything but a JSON object
        try:
            await self._store(config, fetched.etag)
        except sqlite3.OperationalError as exc:
            self._status["config_error"] = f"storage: {storage_error_text(exc)}"
            log.warning("config not stored, retrying at the next poll: %s", storage_error_text(exc))
            return False
        self.config, self._etag, self._good_etag = config, fetched.etag, fetched.etag
        self._status["config_version"], self._status["config_error"] = config.get("version"), None
        log.info("config version %s accepted", config.get("version"))
        await self._apply(config)
        return True

    async def _apply(self, config: dict[str, object]) -> None:
        """Hand a config to the lead's hook; a failing hook is logged and shown, the config stays stored."""
        if self.on_config is None:
            return
        try:
            await self.on_config(config)
        except Exception as exc:
            log.exception("on_config hook failed")
            self._status["config_error"] = f"apply failed: {exc}"

    async def _store(self, config: dict[str, object], etag: str | None) -> None:
        now = self.clock.time()
        upsert = ("INSERT INTO kv_state (key, value, updated_at) VALUES (?, ?, ?)"
                  " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
        async with self.db.transaction() as conn:
            await conn.execute(upsert, (CONFIG_KEY, json.dumps(config), now))
            if etag is None:
                await conn.execute("DELETE FROM kv_state WHERE key = ?", (ETAG_KEY,))
            else:
                await conn.execute(upsert, (ETAG_KEY, etag, now))

    async def _contact(self, status: int | None) -> None:
        await self.reachability.record(status is not None and status < 500)

    async def poll_commands(self) -> int:
        """Finish interrupted claims, pull pending commands, claim and submit each once; returns submitted."""
        self._status["last_poll_at"] = self.clock.time()
        submitted = 0
        try:
            for row in await self.db.fetchall(
                "SELECT body FROM sync_pulled_commands WHERE state = 'claiming' ORDER BY pulled_at"
            ):
                submitted += await self._claim_and_submit(json.loads(row[0]))
            commands = await self.client.pending_commands(self.settings.commands_batch)
            await self._contact(200)
            for cmd in commands:
                cmd_id = cmd.get("cmd_id")
                if not isinstance(cmd_id, str) or not cmd_id:
                    log.error("pending command without cmd_id ignored: %r", cmd)
                    continue
                if await self._known(cmd_id):
                    continue  # already handled here; never run a command twice
                await self.db.execute(
                    "INSERT INTO sync_pulled_commands (cmd_id, state, body, pulled_at, updated_at)"
                    " VALUES (?, 'claiming', ?, ?, ?)",
                    (cmd_id, json.dumps(cmd), self.clock.time(), self.clock.time()),
                )
                submitted += await self._claim_and_submit(cmd)
        except UpstreamError as exc:
            await self._contact(exc.status)
            self._status["commands_error"] = str(exc)
            log.info("command pull failed: %s", exc)
            return submitted
        except sqlite3.OperationalError as exc:
            self._status["commands_error"] = f"storage: {storage_error_text(exc)}"
            log.warning("command pull: storage error: %s", storage_error_text(exc))
            return submitted
        self._status["commands_error"] = None
        return submitted

    async def _known(self, cmd_id: str) -> bool:
        row = await self.db.fetchone("SELECT state FROM sync_pulled_commands WHERE cmd_id = ?", (cmd_id,))
        return row is not None and row[0] != "claiming"

    async def _claim_and_submit(self, cmd: dict[str, object]) -> int:
        """The row is 'claiming' before this runs, so a crash anywhere here never submits twice."""
        cmd_id = str(cmd["cmd_id"])
        if not await self.client.claim_command(cmd_id):
            await self._finish(cmd_id, "rejected", "gone upstream")
            return 0
        await self._contact(200)
        problem = self._problem(cmd)
        if problem is not None:
            await self._finish(cmd_id, "expired" if problem == "expired" else "rejected", problem)
            await self._report_failure(cmd, problem)
            return 0
        assert self.submit_command is not None
        try:
            outcome = await self.submit_command(cmd)
        except Exception as exc:
            log.exception("submit_command failed for %s", cmd_id)
            await self._finish(cmd_id, "rejected", f"submit error: {exc}")
            await self._report_failure(cmd, "submit_error")
            return 0
        await self._finish(cmd_id, "submitted", outcome)
        self._status["commands_submitted"] += 1
        return 1

    def _problem(self, cmd: dict[str, object]) -> str | None:
        if not isinstance(cmd.get("cmd"), str) or not cmd["cmd"]:
            return "invalid_command"
        expires = cmd.get("expires_at")
        if isinstance(expires, int | float) and not isinstance(expires, bool) and expires < self.clock.time():
            return "expired"  # e.g. a pump run queued while the gateway was offline for a day
        return None

    async def _finish(self, cmd_id: str, state: str, submit_status: str) -> None:
        await self.db.execute(
            "UPDATE sync_pulled_commands SET state = ?, submit_status = ?, updated_at = ? WHERE cmd_id = ?",
            (state, submit_status, self.clock.time(), cmd_id),
        )

    async def _report_failure(self, cmd: dict[str, object], error_code: str) -> None:
        """A command refused before the command lifecycle saw it still gets a status upstream.

        Same body shape as the command_status rows of gateway/commands.py (a commands row).
        """
        now = self.clock.time()
        body = {key: cmd.get(key) for key in ("cmd_id", "cmd", "zone_uid", "node_uid", "channel")}
        body.update(params=cmd.get("params") or {}, source="upstream", status="FAILED", error_code=error_code,
                    details={"by": "sync", "expires_at": cmd.get("expires_at")}, created_at=now, updated_at=now,
                    finished_at=now)
        async with self.db.transaction() as conn:
            await enqueue(conn, COMMAND_STATUS, body, now)

    def status(self) -> dict[str, object]:
        """JSON-ready snapshot."""
        return {**self._status, "config_etag": self._good_etag}
