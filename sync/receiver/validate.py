"""Checks a batch envelope and its items against the contract; returns human-readable problems."""

from __future__ import annotations

import math
import operator
import re
from typing import TypeGuard

STREAMS = ("telemetry", "alerts", "zone_events", "command_status", "node_registrations")
GENERATION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_OPT_STR = (str, type(None))
_NUMBER_TYPES: set[type] = {int, float}
_TELEMETRY_FIELDS: dict[str, tuple[type, ...]] = {
    "zone_uid": _OPT_STR,
    "node_uid": _OPT_STR,
    "channel": _OPT_STR,
    "ts_source": _OPT_STR,
    "raw": _OPT_STR,
    "clock_synced": (bool, type(None)),
}


# One batch item, a JSON object as decoded: its values are checked (check_items) before they are used.
Item = dict[str, object]
# The items of a telemetry batch as columns (TELEMETRY_COLUMNS), what the unnest() insert takes.
Columns = dict[str, list[object]]


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _all_ints(values: list[object]) -> TypeGuard[list[int]]:
    return set(map(type, values)) == {int}


def _all_numbers(values: list[object]) -> TypeGuard[list[float]]:
    return set(map(type, values)) <= _NUMBER_TYPES


def int_column(values: list[object]) -> list[int]:
    """A column already checked to hold integers only (seq), typed as such; ValueError if it does not."""
    if not _all_ints(values):
        raise ValueError("column holds values other than integers (batch not checked?)")
    return values


def number_column(values: list[object]) -> list[float]:
    """A column already checked to hold numbers only (ts), typed as such; ValueError if it does not."""
    if not _all_numbers(values):
        raise ValueError("column holds values other than numbers (batch not checked?)")
    return values


def check_envelope(doc: object, gateway_id: str, stream: str, key: str | None) -> list[str]:
    """Envelope problems (ids, counts, ordering, idempotency key); items are checked separately."""
    if not isinstance(doc, dict):
        return ["body must be a JSON object"]
    problems: list[str] = []
    items = doc.get("items")
    if not isinstance(items, list) or not items:
        return ["items must be a non-empty array"]
    if doc.get("gateway_id") != gateway_id:
        problems.append("gateway_id does not match the path")
    if doc.get("stream") != stream:
        problems.append("stream does not match the path")
    generation = doc.get("generation")
    if not isinstance(generation, str) or not GENERATION.match(generation):
        problems.append("generation must be 1-64 characters of [A-Za-z0-9_-]")
    seqs: list[object] = [it.get("seq") if isinstance(it, dict) else None for it in items]
    if not _all_ints(seqs):
        return [*problems, "every item needs a positive integer seq"]
    if min(seqs) <= 0:
        return [*problems, "every item needs a positive integer seq"]
    if not all(map(operator.lt, seqs, seqs[1:])):
        problems.append("item seqs must be strictly increasing")
    if doc.get("count") != len(items):
        problems.append("count does not match the number of items")
    if doc.get("first_seq") != seqs[0] or doc.get("last_seq") != seqs[-1]:
        problems.append("first_seq/last_seq do not match the items")
    expected = f"{gateway_id}:{generation}:{stream}:{seqs[0]}-{seqs[-1]}"
    if key != expected:
        problems.append(f"Idempotency-Key must be {expected!r}")
    return problems


TELEMETRY_COLUMNS = ("seq", "zone_uid", "node_uid", "metric_type", "channel", "value", "ts", "received_at",
                     "ts_source", "clock_synced", "raw")


def telemetry_columns(items: list[Item]) -> Columns:
    """Items as columns (what the unnest() insert takes), built once and checked as columns."""
    return {k: [it.get(k) for it in items] for k in TELEMETRY_COLUMNS}


def check_items(stream: str, items: list[Item], columns: Columns | None = None) -> list[str]:
    """Per-item problems, each naming the seq, so the sender can isolate the bad rows."""
    if stream == "telemetry":
        if _telemetry_columns_ok(columns or telemetry_columns(items)):  # fast path: C-speed column checks
            return []
        return [p for it in items for p in _telemetry_item(it)]
    problems: list[str] = []
    for it in items:
        seq = it["seq"]
        if not isinstance(it.get("data"), dict):
            problems.append(f"seq {seq}: data must be a JSON object")
        if it.get("created_at") is not None and not _is_number(it.get("created_at")):
            problems.append(f"seq {seq}: created_at must be a number")
    return problems


def _numbers(values: list[object]) -> bool:
    return _all_numbers(values) and all(map(math.isfinite, values))


def _telemetry_columns_ok(cols: Columns) -> bool:
    metrics = cols["metric_type"]
    if set(map(type, metrics)) != {str} or not all(metrics):
        return False
    if not _numbers(cols["value"]) or not _numbers(cols["ts"]):
        return False
    if not _numbers([r for r in cols["received_at"] if r is not None]):
        return False
    return all(set(map(type, cols[name])) <= set(types) for name, types in _TELEMETRY_FIELDS.items())


def _telemetry_item(it: Item) -> list[str]:
    seq = it["seq"]
    problems: list[str] = []
    if not isinstance(it.get("metric_type"), str) or not it["metric_type"]:
        problems.append(f"seq {seq}: metric_type must be a non-empty string")
    if not _is_number(it.get("value")):
        problems.append(f"seq {seq}: value must be a finite number")
    if not _is_number(it.get("ts")):
        problems.append(f"seq {seq}: ts must be a finite number")
    if it.get("received_at") is not None and not _is_number(it.get("received_at")):
        problems.append(f"seq {seq}: received_at must be a number")
    for name, types in _TELEMETRY_FIELDS.items():
        if type(it.get(name)) not in types:
            problems.append(f"seq {seq}: {name} has the wrong type")
    return problems
