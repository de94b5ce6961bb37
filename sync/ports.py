"""What sync needs from the gateway, as Protocols (sync never imports ``gateway``).

The gateway's ``SystemClock``/``ManualClock`` and its ``gateway.store.db.Database`` satisfy these
structurally; the composition root hands them in. ``SystemClock`` here is only the default when none is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiosqlite

# Bound parameters of one SQL statement: positional or named.
SqlParams = Sequence[object] | dict[str, object]


class Clock(Protocol):
    """Monotonic and wall time plus an awaitable sleep."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The machine's real clock (the default of sync's services)."""

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def time(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)


class Database(Protocol):
    """The surface of the gateway's SQLite buffer that sync reads and writes."""

    @property
    def generation(self) -> str:
        """Random id of this database file's sequence space."""
        ...

    @property
    def created(self) -> bool:
        """True when the last open gave the file its first generation (a new database)."""
        ...

    async def new_generation(self) -> str:
        """Start a new sequence space (after the receiver lost ours) and return its id."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        ...

    async def execute(self, sql: str, params: SqlParams = ()) -> int:
        """Run one write statement atomically; returns lastrowid."""
        ...

    async def fetchall(self, sql: str, params: SqlParams = ()) -> list[aiosqlite.Row]:
        """Run a query and return all rows."""
        ...

    async def fetchone(self, sql: str, params: SqlParams = ()) -> aiosqlite.Row | None:
        """Run a query and return the first row or None."""
        ...
