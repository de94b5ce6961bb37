"""Command lifecycle (mqtt-bridge at the edge): QUEUED → SENT → ACK → DONE | FAILED | TIMEOUT.

Commands come from automation, schedules, the local API and upstream. Each must match the command
contract (``firmware_contracts.commands``); the safety gate then checks the interlock for anything that
actuates and alone drives the relay or publishes to the node. A refused command is recorded as FAILED with
the reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Protocol

from firmware_contracts.commands import CommandContractError, ValidCommand, parse_command
from firmware_contracts.models import CommandResponse, CommandStatus
from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.registry import Registry
from gateway.router import RejectedMessage, Routed
from gateway.safety.gate import Dispatched, NodeNotAssigned
from gateway.store import commands as store
from gateway.store.commands import CommandJson
from gateway.store.db import Database

log = logging.getLogger(__name__)


class Status(StrEnum):
    """Command states; the last three are final."""

    QUEUED = "QUEUED"
    SENT = "SENT"
    ACK = "ACK"
    DONE = "DONE"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"


# What a node's answer makes of the command.
_STATUS_OF_RESPONSE: dict[CommandStatus, Status] = {
    CommandStatus.ACK: Status.ACK,
    CommandStatus.DONE: Status.DONE,
    CommandStatus.ERROR: Status.FAILED,
}


FINAL = frozenset({Status.DONE, Status.FAILED, Status.TIMEOUT})
_ORDER = {Status.QUEUED: 0, Status.SENT: 1, Status.ACK: 2, Status.DONE: 3, Status.FAILED: 3, Status.TIMEOUT: 3}


class CommandGate(Protocol):
    """The safety gate as the command path sees it: the only way a command reaches a relay or a node."""

    def is_local(self, channel: str) -> bool:
        """True when ``channel`` names a gateway relay."""
        ...

    async def dispatch(
        self, zone_id: int, channel: str, node_uid: str | None, command: ValidCommand, cmd_id: str, source: str
    ) -> Dispatched:
        """Interlock (for anything that actuates), then the relay or the node."""
        ...


ErrorHook = Callable[[CommandJson, str, Mapping[str, object]], Awaitable[None]]


class CommandRefused(Exception):
    """The command was refused before sending (interlock, unknown target, bad request)."""

    def __init__(self, cmd_id: str | None, reason: str, http_status: int = 409) -> None:
        super().__init__(reason)
        self.cmd_id = cmd_id
        self.reason = reason
        self.http_status = http_status


class CommandService:
    """Creates, sends, tracks and times out commands."""

    def __init__(
        self,
        db: Database,
        alerts: Alerts,
        registry: Registry,
        clock: Clock,
        metrics: Metrics,
        gate: CommandGate,
        timeout_s: float = 30.0,
        on_error: ErrorHook | None = None,
    ) -> None:
        self._db = db
        self._alerts = alerts
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._gate = gate
        self._timeout = timeout_s
        self._on_error = on_error

    async def submit(
        self,
        zone_uid: str,
        channel: str,
        cmd: str,
        params: Mapping[str, object] | None = None,
        *,
        node_uid: str | None = None,
        source: str = "api",
        cmd_id: str | None = None,
    ) -> CommandJson:
        """Create and dispatch a command; returns its record. Raises CommandRefused when refused.

        The command must match the contract (422 otherwise, nothing stored or sent); the gate checks the
        interlock for anything that actuates and is the only one that drives the relay or publishes.
        """
        try:
            command = parse_command(cmd, dict(params or {}))
        except CommandContractError as exc:
            raise CommandRefused(cmd_id, f"invalid command: {exc.reason}", 422) from exc
        zone_id = self._registry.zone_id(zone_uid)
        if zone_id is None:
            raise CommandRefused(cmd_id, f"unknown zone {zone_uid!r}", 404)
        cmd_id = cmd_id or uuid.uuid4().hex
        existing = await self.get(cmd_id)
        if existing is not None:  # upstream retries and QoS 1 repeats: same cmd_id, same command
            return existing
        local = node_uid is None and self._gate.is_local(channel)
        node_id: int | None = None
        if not local:
            node = self._registry.get(node_uid or "")
            if node is None:
                raise CommandRefused(cmd_id, f"unknown node {node_uid!r}", 404)
            if node.zone_id != zone_id:
                raise CommandRefused(cmd_id, f"node {node_uid!r} is not in zone {zone_uid!r}", 422)
            node_id = node.id
        await self._insert(cmd_id, zone_id, node_id, channel, "local" if local else "node", command, source)
        await self._dispatch(cmd_id, zone_id, channel, None if local else node_uid, command, source)
        record = await self.get(cmd_id)
        assert record is not None
        return record

    async def _dispatch(
        self, cmd_id: str, zone_id: int, channel: str, node_uid: str | None, command: ValidCommand, source: str
    ) -> None:
        try:
            result = await self._gate.dispatch(zone_id, channel, node_uid, command, cmd_id, source)
        except NodeNotAssigned:
            await self._set_status(cmd_id, Status.FAILED, error_code="node_unassigned")
            return
        if result.status == "REFUSED":
            reason = result.reason or "interlock"
            await self._set_status(cmd_id, Status.FAILED, error_code="interlock", details={"reason": reason})
            await self._alerts.record_event(
                zone_id,
                "COMMAND_REFUSED",
                {"cmd_id": cmd_id, "cmd": command.name.value, "channel": channel, "source": source, "reason": reason},
            )
            raise CommandRefused(cmd_id, reason)
        if result.status == "SENT":
            await self._set_status(cmd_id, Status.SENT)
            return
        await self._set_status(cmd_id, Status.SENT)
        await self._set_status(cmd_id, Status(result.status), error_code=result.reason)

    async def resend_in_flight(self) -> int:
        """After a restart: send node commands that were SENT but never answered again (nodes ignore repeats);
        anything that actuates passes the interlock again, as it is now."""
        rows = await store.in_flight(self._db, self._clock.time() - self._timeout)
        for row in rows:
            try:
                command = parse_command(row.cmd, row.params)
            except CommandContractError as exc:
                await self._set_status(row.cmd_id, Status.FAILED, error_code="invalid_command",
                                       details={"reason": exc.reason})
                continue
            try:
                await self._dispatch(row.cmd_id, row.zone_id, row.channel, row.node_uid, command, row.source)
            except CommandRefused:
                continue  # recorded as FAILED with the reason
        return len(rows)

    async def on_response(self, routed: Routed[CommandResponse]) -> None:
        """Apply a node's command_response."""
        resp = routed.model
        cmd_id = resp.cmd_id
        row = await store.get(self._db, cmd_id)
        if row is None:
            raise RejectedMessage("unknown_cmd_id", cmd_id)
        node = self._registry.get(routed.topic.node or "")
        if node is None or node.id != row.node_id or (routed.topic.channel or "") != row.record["channel"]:
            raise RejectedMessage("response_wrong_node", f"{cmd_id} answered by {routed.topic.node}")
        status = _STATUS_OF_RESPONSE[resp.status]
        details = dict(resp.details)
        changed = await self._set_status(cmd_id, status, error_code=resp.error_code, details=details)
        if changed and status is Status.FAILED and self._on_error is not None:
            record = await self.get(cmd_id)
            assert record is not None
            await self._on_error(record, resp.error_code or "error", details)

    async def sweep_once(self) -> int:
        """Mark SENT/ACK commands older than the timeout as TIMEOUT."""
        overdue = await store.overdue(self._db, self._clock.time() - self._timeout)
        for cmd_id in overdue:
            await self._set_status(cmd_id, Status.TIMEOUT, error_code="timeout")
        return len(overdue)

    async def sweeper(self, interval_s: float = 1.0) -> None:
        """Run ``sweep_once`` forever."""
        while True:
            await self._clock.sleep(interval_s)
            await self.sweep_once()

    async def get(self, cmd_id: str) -> CommandJson | None:
        """The command as JSON-ready dict, or None."""
        row = await store.get(self._db, cmd_id)
        return None if row is None else row.record

    async def _insert(
        self,
        cmd_id: str,
        zone_id: int,
        node_id: int | None,
        channel: str,
        target: str,
        command: ValidCommand,
        source: str,
    ) -> None:
        await store.insert(
            self._db, cmd_id=cmd_id, zone_id=zone_id, node_id=node_id, channel=channel, target=target,
            cmd=command.name.value, params=command.params, source=source, now=self._clock.time(),
        )
        self._metrics.commands.labels(status="QUEUED").inc()

    async def _set_status(
        self, cmd_id: str, status: Status, *, error_code: str | None = None, details: Mapping[str, object] | None = None
    ) -> bool:
        """Move forward only (a late ACK after DONE is ignored); returns True when the status changed."""
        column = {Status.SENT: "sent_at", Status.ACK: "ack_at"}.get(status, "finished_at")

        def may_move(current: str) -> bool:
            now_status = Status(current)
            return now_status not in FINAL and _ORDER[status] > _ORDER[now_status]

        moved = await store.advance(self._db, cmd_id, status.value, may_move=may_move, at_column=column,
                                    error_code=error_code, details=details, now=self._clock.time())
        if not moved:
            return False
        self._metrics.commands.labels(status=status.value).inc()
        if status in (Status.FAILED, Status.TIMEOUT):
            log.warning("command %s %s (%s)", cmd_id, status.value, error_code)
        return True
