"""Telemetry ingest (history-logger at the edge): one code path for MQTT and POST /ingest/telemetry.

Accepted samples go to a bounded queue; ``TelemetryWriter`` commits them in batches and only then completes
the message's ``Ack`` (PUBACK / HTTP 2xx), so a ``kill -9`` loses nothing that was acknowledged. A message
carrying an identity (boot, seq) already committed is dropped here, and acknowledged once what came before
it is committed (gateway/sequences.py).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from firmware_contracts.models import telemetry_items
from firmware_contracts.timestamps import to_unix_seconds
from firmware_contracts.validate import JsonDocument
from gateway.alert_throttle import AlertThrottle
from gateway.alerts import Alerts
from gateway.broker.messages import Ack
from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.ratelog import RateLimitedLog
from gateway.readings import LatestReadings, Reading
from gateway.registry import NodeInfo, Registry
from gateway.router import Handler, M, RejectedMessage, Routed
from gateway.sequences import NodeSequences, identity_of, message_identity
from gateway.store.nodes import SeqMark
from gateway.telemetry_metrics import PHYSICAL_RANGE, UnknownMetricError, normalize_metric_type
from gateway.timesync import ClockSyncProbe
from gateway.writer import SampleRow, TelemetryWriter

log = logging.getLogger(__name__)

MIN_VALID_TS = 1_577_836_800.0  # 2020-01-01T00:00:00Z: anything earlier is an unset node clock
_encode_raw = json.JSONEncoder(separators=(",", ":"), default=str).encode


class SampleIn(NamedTuple):
    """One telemetry sample as it arrives, before validation (a tuple: built tens of thousands of times a second)."""

    node_uid: str
    metric_type: Any
    value: Any
    ts: Any = None
    zone_uid: str | None = None
    channel: str | None = None
    raw: Any = None
    boot: Any = None  # HTTP ingest: the sample's message identity (over MQTT it is the message's)
    seq: Any = None


@dataclass
class IngestResult:
    """Outcome of one ingest call: accepted count and per-sample rejection reasons."""

    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0


class SampleRejected(Exception):
    """A sample failed validation; ``reason`` is the counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Ingest:
    """Validates samples, updates the in-memory latest readings and queues rows for the writer."""

    def __init__(
        self,
        registry: Registry,
        alerts: Alerts,
        writer: TelemetryWriter,
        latest: LatestReadings,
        clock: Clock,
        metrics: Metrics,
        timesync: ClockSyncProbe,
        max_future_skew_s: float = 300.0,
        sequences: NodeSequences | None = None,
    ) -> None:
        self._registry = registry
        self._alerts = alerts
        self._writer = writer
        self._latest = latest
        self._clock = clock
        self._metrics = metrics
        self._timesync = timesync
        self._max_skew = max_future_skew_s
        self._sequences = sequences
        self._ratelog = RateLimitedLog(log, 60.0, clock.monotonic)
        self._alert_throttle = AlertThrottle(alerts, clock)
        self._accepted = metrics.ingest_samples.labels(result="accepted", reason="")

    async def on_telemetry(self, routed: Routed[JsonDocument]) -> None:
        """MQTT entry point: the node comes from the topic, the identity (if any) from the payload's top level."""
        node_uid = routed.topic.node or ""
        zone_uid = routed.topic.zone
        topic_channel = routed.topic.channel
        message = routed.message
        marks: list[SeqMark] = []
        identity = message_identity(routed.payload) if self._sequences is not None else None
        if identity is not None and self._is_duplicate(node_uid, identity, message.dup, marks):
            await self._writer.submit([], marks, message.ack)
            return
        get = dict.get
        samples = [
            SampleIn(node_uid, item["metric_type"], item["value"], get(item, "ts"), zone_uid,
                     get(item, "channel") or topic_channel, get(item, "raw"))
            for item in telemetry_items(routed.payload)
        ]
        await self.accept(samples, source="mqtt", ack=message.ack, marks=marks)

    def identified(self, handler: Handler[M]) -> Handler[M]:
        """Wrap a heartbeat / command_response handler: drop re-sent identities, commit the sequence state.

        These handlers write SQLite themselves (idempotent updates); the node's sequence state follows in the
        writer's next commit, and the message is acknowledged after both.
        """

        async def handle(routed: Routed[M]) -> None:
            identity = message_identity(routed.payload) if self._sequences is not None else None
            if identity is None:
                await handler(routed)
                return
            marks: list[SeqMark] = []
            node = self._registry.get(routed.topic.node or "")
            before = self._sequences.snapshot(node.id) if node is not None and self._sequences else None
            if self._is_duplicate(routed.topic.node or "", identity, routed.message.dup, marks):
                await self._writer.submit([], marks, routed.message.ack)
                return
            try:
                await handler(routed)
            except RejectedMessage:
                if marks:  # invalid: its number is used all the same (a re-send is just as invalid)
                    await self._writer.submit([], marks, routed.message.ack)
                raise
            except BaseException:
                # Not stored (storage error, cancelled): the number must stay new, for the re-send.
                if node is not None and self._sequences is not None:
                    self._sequences.restore(node.id, before)
                raise
            if marks:
                await self._writer.submit([], marks, routed.message.ack)

        return handle

    def _is_duplicate(self, node_uid: str, identity: tuple[str, int], dup_flag: bool, marks: list[SeqMark]) -> bool:
        """Check one identity of a registered node (appending its state to ``marks``); True: already committed."""
        node = self._registry.get(node_uid)
        if node is None or self._sequences is None:
            return False  # an unknown node's messages are rejected anyway, without touching any state
        reason, mark = self._sequences.check(node.id, node.uid, identity[0], identity[1], dup_flag)
        marks.append(mark)
        if reason is not None:
            self._ratelog.warn(f"{node_uid}:duplicate", "dropped re-sent message %s/%s from %s (%s)",
                               identity[0], identity[1], node_uid, reason)
            return True
        return False

    async def accept(
        self, samples: Sequence[SampleIn], source: str, ack: Ack | None = None, marks: list[SeqMark] | None = None
    ) -> IngestResult:
        """The shared path: validate each sample and queue the good ones (in order, in one go).

        ``ack`` is completed once they are committed (at once if nothing was queued). HTTP samples carrying an
        identity already committed are counted in ``duplicates`` and not stored.
        """
        result = IngestResult()
        marks = [] if marks is None else marks
        received_at = self._clock.time()
        mono = self._clock.monotonic()
        synced = self._timesync.synced()
        rows: list[SampleRow] = []
        unknown: dict[str, tuple[NodeInfo, str, int]] = {}
        touched: NodeInfo | None = None
        rejected_by_reason: dict[tuple[str, str], tuple[int, str]] = {}
        for index, sample in enumerate(samples):
            if sample.seq is not None and self._sequences is not None:
                identity = identity_of(sample.boot, sample.seq)
                if identity is not None and self._is_duplicate(sample.node_uid, identity, False, marks):
                    result.duplicates += 1
                    continue
            try:
                row, node = self._validate(sample, received_at, mono, synced, unknown)
            except SampleRejected as exc:
                key = (sample.node_uid, exc.reason)
                seen = rejected_by_reason.get(key)
                rejected_by_reason[key] = (seen[0] + 1, seen[1]) if seen else (1, exc.detail)
                result.rejected.append({"index": index, "reason": exc.reason, "detail": exc.detail})
                continue
            if node is not touched:
                self._registry.touch(node)
                touched = node
            rows.append(row)
        if rows or marks:
            await self._writer.submit(rows, marks, ack)
            self._accepted.inc(len(rows))
            result.accepted = len(rows)
        # Rejections are counted, logged and alerted once per (node, reason) per message, not per sample.
        for (node_uid, reason), (count, detail) in rejected_by_reason.items():
            self._metrics.ingest_samples.labels(result="rejected", reason=reason).inc(count)
            more = f" (+{count - 1} more in this message)" if count > 1 else ""
            self._ratelog.warn(f"{node_uid}:{reason}", "rejected %s sample from %s: %s%s", source, node_uid, detail,
                               more)
        for node, raw, count in unknown.values():
            await self._unknown_metric(node, raw, count)
        return result

    def _validate(
        self, s: SampleIn, received_at: float, mono: float, synced: bool, unknown: dict[str, tuple[NodeInfo, str, int]]
    ) -> tuple[SampleRow, NodeInfo]:
        node = self._registry.get(s.node_uid)
        if node is None:
            raise SampleRejected("unknown_node", f"node {s.node_uid!r} is not registered")
        if not node.validated or node.zone_id is None:
            raise SampleRejected("node_not_validated", f"node {s.node_uid!r} is not assigned to a zone")
        if s.zone_uid is not None and s.zone_uid != node.zone_uid:
            raise SampleRejected(
                "zone_mismatch", f"node {s.node_uid!r} belongs to {node.zone_uid!r}, not {s.zone_uid!r}"
            )
        if not isinstance(s.metric_type, str):
            raise SampleRejected("bad_metric_type", f"metric_type {s.metric_type!r} is not a string")
        try:
            metric = normalize_metric_type(s.metric_type)
        except UnknownMetricError as exc:
            seen = unknown.get(node.uid)
            unknown[node.uid] = (node, seen[1], seen[2] + 1) if seen else (node, exc.raw, 1)
            raise SampleRejected("unknown_metric", str(exc)) from None
        value = s.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SampleRejected("non_numeric", f"{metric.value} value {value!r} is not a number")
        value = float(value)
        if not math.isfinite(value):
            raise SampleRejected("non_finite", f"{metric.value} value {value!r}")
        lo, hi = PHYSICAL_RANGE[metric]
        if not lo <= value <= hi:
            raise SampleRejected("out_of_range", f"{metric.value}={value} outside {lo}..{hi}")
        ts, ts_source = self._timestamp(s.ts, received_at)
        # Freshness counts from the measurement: the node's own ts when we trust it, else receipt.
        measured = mono - max(0.0, received_at - ts) if ts_source == "node" and synced else None
        self._latest.update(node.zone_id, metric, Reading(value, mono, ts, node.id, s.channel, measured))
        raw = None if s.raw is None else _encode_raw(s.raw)
        row = SampleRow(
            node.zone_id, node.id, metric.value, s.channel, value, ts, received_at, ts_source, int(synced), raw
        )
        return row, node

    def _timestamp(self, ts: Any, received_at: float) -> tuple[float, str]:
        """Keep the node's clock unless it is absurd (unset RTC, or in the future)."""
        if ts is None:
            return received_at, "gateway"
        value: float | None
        if isinstance(ts, bool):
            value = None
        elif isinstance(ts, int | float):
            value = float(ts) / 1000.0 if ts > 1e11 else float(ts)  # milliseconds from some firmwares
        elif isinstance(ts, str):
            try:
                value = to_unix_seconds(ts)
            except ValueError:
                value = None
        else:
            value = None
        if value is None or not math.isfinite(value):
            self._metrics.ingest_samples.labels(result="flagged", reason="bad_ts").inc()
            return received_at, "gateway_bad_ts"
        if value < MIN_VALID_TS or value > received_at + self._max_skew:
            self._metrics.ingest_samples.labels(result="flagged", reason="absurd_ts").inc()
            return received_at, "gateway_absurd_ts"
        return value, "node"

    async def _unknown_metric(self, node: NodeInfo, raw: str, count: int) -> None:
        # Written at most once per node per interval (AlertThrottle): a flood costs no transaction per sample.
        await self._alert_throttle.raise_alert(
            "unknown_metric",
            zone_id=node.zone_id,
            scope=node.uid,
            details={"node_uid": node.uid, "metric_type": raw[:64], "samples_in_message": count},
        )
