"""Log a repeated complaint once per key per interval, counting what was suppressed.

It lives in the lowest layer (drivers) because drivers need it too; ``gateway/ratelog.py`` re-exports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


class RateLimitedLog:
    """``warn(key, msg, *args)`` logs at most once per ``interval_s`` for each key (e.g. per node)."""

    def __init__(self, logger: logging.Logger, interval_s: float, monotonic: Callable[[], float]) -> None:
        self._log = logger
        self._interval = interval_s
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: object) -> None:
        """Log a warning unless this key logged within the interval."""
        self._emit(logging.WARNING, key, msg, args, False)

    def info(self, key: str, msg: str, *args: object) -> None:
        """Log at INFO unless this key logged within the interval."""
        self._emit(logging.INFO, key, msg, args, False)

    def error(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        """Log an error (with the traceback when ``exc_info``) unless this key logged within the interval."""
        self._emit(logging.ERROR, key, msg, args, exc_info)

    def _emit(self, level: int, key: str, msg: str, args: tuple[object, ...], exc_info: bool) -> None:
        now = self._monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        skipped = self._suppressed.pop(key, 0)
        self._last[key] = now
        if len(self._last) > 10_000:  # bound memory under a flood of distinct keys
            self._last.clear()
        suffix = f" (+{skipped} similar suppressed)" if skipped else ""
        self._log.log(level, msg + suffix, *args, exc_info=exc_info)
