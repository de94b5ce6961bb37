"""Contract timestamps: unix seconds or RFC 3339 strings, both turned into unix seconds."""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["is_rfc3339", "parse_rfc3339", "to_unix_seconds"]

# RFC 3339 §5.6 date-time: full date, 'T', full time with seconds, optional fraction, mandatory offset.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time into an aware datetime; ValueError if it is not one."""
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    normalised = text.upper()
    if normalised.endswith("Z"):
        normalised = normalised[:-1] + "+00:00"
    # fromisoformat also checks calendar validity (Feb 30, hour 25, offset ≥ 24 h); leap seconds are refused.
    return datetime.fromisoformat(normalised)


def is_rfc3339(value: object) -> bool:
    """JSON Schema ``date-time`` format check; non-strings pass (``type`` is checked separately)."""
    if not isinstance(value, str):
        return True
    try:
        parse_rfc3339(value)
    except ValueError:
        return False
    return True


def to_unix_seconds(value: float | str) -> float:
    """A schema-valid contract timestamp as float unix seconds."""
    if isinstance(value, str):
        return parse_rfc3339(value).timestamp()
    return float(value)
