"""Jinja2 environment of the pages: autoescaping on, and the formatters the browser script mirrors.

The environment is built on the first page request, in a worker thread (``PageTemplates``): importing
jinja2 and compiling the templates costs ~5.7 MB of RSS that a headless gateway (nobody opens the status
page) never needs, and compiling in a thread keeps it off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    import jinja2

from gateway.telemetry_metrics import CANONICAL_METRICS
from gateway.web.series import DECIMALS


def fmt_age(seconds: float | None) -> str:
    """A duration the way an operator reads it: '12 s', '3 min', '2 h 5 min', '4 d 1 h'."""
    if seconds is None:
        return "—"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def fmt_bytes(n: float | None) -> str:
    """Binary units with one decimal."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_value(value: float | None, metric: str) -> str:
    """A reading with its metric's usual number of decimals."""
    if value is None:
        return "—"
    m = CANONICAL_METRICS.get(metric)
    return f"{value:.{DECIMALS[m] if m else 2}f}"


def fmt_num(value: float | None, decimals: int = 1) -> str:
    """A number with fixed decimals, or a dash."""
    return "—" if value is None else f"{value:.{decimals}f}"


def fmt_details(details: Mapping[str, object] | None) -> str:
    """Event details as 'key=value, …' (non-strings as compact JSON, like the browser's JSON.stringify)."""
    if not details:
        return "—"
    return ", ".join(f"{k}={v if isinstance(v, str) else _js_json(v)}" for k, v in details.items())


def _js_json(value: object) -> str:
    return json.dumps(_js_numbers(value), separators=(",", ":"), ensure_ascii=False)


def _js_numbers(value: object) -> object:
    # JavaScript has one number type: 2.0 prints as 2 there, so it does here too.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def make_environment(tz: str) -> jinja2.Environment:
    """The environment for the package templates, times shown in the gateway's timezone (blocking: compiles)."""
    import jinja2  # here, not at module level: see the module docstring

    zone = ZoneInfo(tz)

    def fmt_when(ts: float | None) -> str:
        if ts is None:
            return "—"
        return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M")

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # no stat() of template files on every render
    )
    env.filters.update(
        {
            "age": fmt_age,
            "bytes": fmt_bytes,
            "value": fmt_value,
            "num": fmt_num,
            "when": fmt_when,
            "details": fmt_details,
        }
    )
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)  # read and compile at start-up, not inside a request on the event loop
    return env


class PageTemplates:
    """The page templates, compiled once on first use in a worker thread (see the module docstring)."""

    def __init__(self, tz: str) -> None:
        self._tz = tz
        self._env: jinja2.Environment | None = None
        self._lock = asyncio.Lock()
        self.globals: dict[str, object] = {}  # copied into the environment when it is built

    @property
    def built(self) -> bool:
        """Whether the environment exists (a page was rendered)."""
        return self._env is not None

    async def environment(self) -> jinja2.Environment:
        """The environment, built on the first call; concurrent first calls wait for one build."""
        if self._env is None:
            async with self._lock:
                if self._env is None:
                    env = await asyncio.to_thread(make_environment, self._tz)
                    env.globals.update(self.globals)
                    self._env = env
        return self._env

    def set_global(self, name: str, value: Callable[..., object]) -> None:
        """A template global (e.g. ``static``), also when the environment is built later."""
        self.globals[name] = value
        if self._env is not None:
            self._env.globals[name] = value
