"""The serial framing of firmware messages (pure): one JSON object per line.

A node on a wire has no broker, so each line names the MQTT topic it would have published to::

    {"topic": "hydro/gh-1/zone-a/node-7/telemetry", "payload": {"metric_type": "ph", "value": 6.1, "ts": 1}}

``payload`` is a JSON object or array (the same document the node would send over MQTT); commands and
config go the other way in the same framing. NaN/Infinity are not JSON and are rejected.
"""

from __future__ import annotations

import json
import re
from typing import NoReturn

TOPIC_RE = re.compile(r"hydro/[A-Za-z0-9_/-]{1,250}")


class FrameError(ValueError):
    """A line that is not a valid frame; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def decode_frame(line: bytes) -> tuple[str, bytes]:
    """Return ``(topic, payload_json_bytes)`` or raise ``FrameError`` (garbage / not_json / bad_frame)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError("garbage", f"not UTF-8 at byte {exc.start}") from exc
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise FrameError("not_json", str(exc)) from exc
    if not isinstance(document, dict):
        raise FrameError("bad_frame", "frame must be a JSON object")
    topic = document.get("topic")
    payload = document.get("payload")
    if not isinstance(topic, str) or not TOPIC_RE.fullmatch(topic):
        raise FrameError("bad_frame", f"bad or missing topic {topic!r}")
    if not isinstance(payload, dict | list):
        raise FrameError("bad_frame", "payload must be a JSON object or array")
    return topic, _dump(payload)


def encode_frame(topic: str, payload: bytes) -> bytes:
    """One framed line (with ``\\n``) for ``topic`` and a JSON ``payload``; ``ValueError`` if invalid."""
    if not TOPIC_RE.fullmatch(topic):
        raise ValueError(f"bad topic {topic!r}")
    document = json.loads(payload, parse_constant=_reject_constant)
    if not isinstance(document, dict | list):
        raise ValueError("payload must be a JSON object or array")
    return _dump({"topic": topic, "payload": document}) + b"\n"


def _dump(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")
