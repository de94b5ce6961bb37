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
from typing import NoReturn, Protocol

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

    def local_running(self, zone_id: int, channel: str) -> bool:
        """Is this gateway relay's pump running now?"""
        ...

    async def undo_local_start(self, zone_id: int, channel: str) -> None:
        """Stop a relay pump started by a command that could not be recorded."""
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
        if cmd_id is not None:  # upstream retries and QoS 1 repeats: same cmd_id, same command
            existing = await self.get(cmd_id)
            if existing is not None:
                return existing
        else:  # a fresh uuid4 cannot be stored yet: no lookup
            cmd_id = uuid.uuid4().hex
        local = node_uid is None and self._gate.is_local(channel)
        node_id: int | None = None
        if not local:
            node = self._registry.get(node_uid or "")
            if node is None:
                raise CommandRefused(cmd_id, f"unknown node {node_uid!r}", 404)
            if node.zone_id != zone_id:
                raise CommandRefused(cmd_id, f"node {node_uid!r} is not in zone {zone_uid!r}", 422)
            node_id = node.id
        # The registry knows the uids: the record is built here, not read back from the database.
        record = store.new_record(
            cmd_id=cmd_id, zone_uid=zone_uid, node_uid=None if local else node_uid, channel=channel,
            target="local" if local else "node", cmd=command.name.value, params=command.params, source=source,
            now=self._clock.time(),
        )
        if local:
            return await self._run_local(record, zone_id, command)
        # Stored before anything is published: the node may answer before the publish returns.
        await store.insert(self._db, record, zone_id=zone_id, node_id=node_id)
        self._metrics.commands.labels(status="QUEUED").inc()
        latest = await self._dispatch(cmd_id, zone_id, channel, node_uid, command, source)
        if latest is None:  # the node answered first (its status is further on): show what is stored
            stored = await self.get(cmd_id)
            assert stored is not None
            return stored
        return latest

    async def _run_local(self, queued: CommandJson, zone_id: int, command: ValidCommand) -> CommandJson:
        """A gateway relay: the gate's answer is known when ``dispatch`` returns, so the command is stored once,
        in its final state, with the outbox rows of every state it went through (QUEUED, SENT, DONE/FAILED).

        Nothing outside this process can answer a relay command, so nothing needs to find it stored before the
        switch. Should the database fail after the switch, a pump this command started is stopped again and the
        error reaches the caller: an error means nothing happened, as when the command was stored first.
        """
        cmd_id, channel, source = queued["cmd_id"], queued["channel"], queued["source"]
        states = [queued]
        was_running = self._gate.local_running(zone_id, channel)
        try:
            result = await self._gate.dispatch(zone_id, channel, None, command, cmd_id, source)
        except NodeNotAssigned:
            result = Dispatched("FAILED", "node_unassigned")
            states.append(_moved(queued, Status.FAILED, self._clock.time(), error_code="node_unassigned"))
        else:
            now = self._clock.time()
            if result.status == "REFUSED":
                states.append(_moved(queued, Status.FAILED, now, error_code="interlock",
                                     details={"reason": result.reason or "interlock"}))
            else:
                sent = _moved(queued, Status.SENT, now)
                states += [sent, _moved(sent, Status(result.status), now, error_code=result.reason)]
        try:
            await store.insert_finished(self._db, states, zone_id=zone_id, node_id=None)
        except Exception:
            # The caller gets an error: a pump this command started must not keep running unrecorded.
            if result.status == "DONE" and command.pump_on and not was_running:
                await self._gate.undo_local_start(zone_id, channel)
            raise
        for state in states:
            self._metrics.commands.labels(status=state["status"]).inc()
        final = states[-1]
        if final["status"] == Status.FAILED:
            log.warning("command %s %s (%s)", cmd_id, final["status"], final["error_code"])
        if result.status == "REFUSED":
            reason = result.reason or "interlock"
            await self._refused(cmd_id, zone_id, command, channel, source, reason)
        return final

    async def _refused(
        self, cmd_id: str, zone_id: int, command: ValidCommand, channel: str, source: str, reason: str
    ) -> NoReturn:
        """Record the refusal as a zone event and tell the caller."""
        await self._alerts.record_event(
            zone_id,
            "COMMAND_REFUSED",
            {"cmd_id": cmd_id, "cmd": command.name.value, "channel": channel, "source": source, "reason": reason},
        )
        raise CommandRefused(cmd_id, reason)

    async def _dispatch(
        self, cmd_id: str, zone_id: int, channel: str, node_uid: str | None, command: ValidCommand, source: str
    ) -> CommandJson | None:
        """Send a stored node command through the gate; returns the command as this call left it (None when
        its status did not move, e.g. the node answered first)."""
        try:
            result = await self._gate.dispatch(zone_id, channel, node_uid, command, cmd_id, source)
        except NodeNotAssigned:
            return await self._set_status(cmd_id, Status.FAILED, error_code="node_unassigned")
        if result.status == "REFUSED":
            reason = result.reason or "interlock"
            await self._set_status(cmd_id, Status.FAILED, error_code="interlock", details={"reason": reason})
            await self._refused(cmd_id, zone_id, command, channel, source, reason)
        if result.status == "SENT":
            return await self._set_status(cmd_id, Status.SENT)
        await self._set_status(cmd_id, Status.SENT)
        return await self._set_status(cmd_id, Status(result.status), error_code=result.reason)

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
        if changed is not None and status is Status.FAILED and self._on_error is not None:
            await self._on_error(changed, resp.error_code or "error", details)

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

    async def _set_status(
        self, cmd_id: str, status: Status, *, error_code: str | None = None, details: Mapping[str, object] | None = None
    ) -> CommandJson | None:
        """Move forward only (a late ACK after DONE is ignored); returns the command when its status changed."""
        column = {Status.SENT: "sent_at", Status.ACK: "ack_at"}.get(status, "finished_at")

        def may_move(current: str) -> bool:
            now_status = Status(current)
            return now_status not in FINAL and _ORDER[status] > _ORDER[now_status]

        moved = await store.advance(self._db, cmd_id, status.value, may_move=may_move, at_column=column,
                                    error_code=error_code, details=details, now=self._clock.time())
        if moved is None:
            return None
        self._metrics.commands.labels(status=status.value).inc()
        if status in (Status.FAILED, Status.TIMEOUT):
            log.warning("command %s %s (%s)", cmd_id, status.value, error_code)
        return moved


def _moved(
    record: CommandJson, status: Status, now: float, *, error_code: str | None = None,
    details: Mapping[str, object] | None = None,
) -> CommandJson:
    """``record`` moved on to ``status`` at ``now`` (what ``store.advance`` would write), as a new record."""
    moved = record.copy()
    moved["status"] = status.value
    moved["updated_at"] = now
    if status is Status.SENT:
        moved["sent_at"] = now
    elif status is Status.ACK:
        moved["ack_at"] = now
    else:
        moved["finished_at"] = now
    if error_code is not None:
        moved["error_code"] = error_code
    if details is not None:
        moved["details"] = dict(details)
    return moved
