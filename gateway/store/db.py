"""The one SQLite connection of the gateway: WAL, numbered forward-only migrations, explicit transactions."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)
T = TypeVar("T")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed or failed to apply."""


def bundled_migrations() -> list[tuple[int, str, str]]:
    """Return (version, name, sql) for every migration shipped in the package, in order."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files("gateway.store.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"duplicate migration numbers: {versions}")
    return found


class Database:
    """Wraps one aiosqlite connection; all multi-statement writes go through ``transaction()``.

    The connection runs in autocommit mode so that ``transaction()`` owns BEGIN/COMMIT explicitly;
    a lock keeps concurrent tasks from interleaving statements inside someone else's transaction.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self._tx_lock = asyncio.Lock()

    @property
    def conn(self) -> aiosqlite.Connection:
        """The open connection (raises if closed)."""
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self, migrations: Iterable[tuple[int, str, str]] | None = None) -> None:
        """Open the file, set WAL once, apply pending migrations."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        self._conn = conn
        await conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut loses at most the last commits, never corrupts (SD wear vs FULL).
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        await self._migrate(bundled_migrations() if migrations is None else list(migrations))

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _migrate(self, migrations: Sequence[tuple[int, str, str]]) -> None:
        conn = self.conn
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            applied = {int(row[0]) for row in await cur.fetchall()}
        for version, name, sql in migrations:
            if version in applied:
                continue
            log.info("applying migration %s", name)
            try:
                await conn.execute("BEGIN IMMEDIATE")
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
                await conn.execute("COMMIT")
            except Exception as exc:
                await conn.execute("ROLLBACK")
                raise MigrationError(f"migration {name} failed: {exc}") from exc

    async def applied_migrations(self) -> list[int]:
        """Versions recorded in ``schema_migrations``."""
        return [int(r[0]) for r in await self.fetchall("SELECT version FROM schema_migrations ORDER BY version")]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        async with self._tx_lock:
            conn = self.conn
            if conn.in_transaction:  # a cancelled transaction whose ROLLBACK never ran
                await conn.execute("ROLLBACK")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                # Shielded so that a second cancellation cannot leave the transaction open.
                if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    await asyncio.shield(conn.execute("ROLLBACK"))
                raise
            else:
                await conn.execute("COMMIT")

    async def in_thread_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside BEGIN IMMEDIATE … COMMIT as ONE call on aiosqlite's worker thread.

        For the hot telemetry path: one hop to the thread per batch instead of four. Relies on
        aiosqlite's single worker thread (``Connection._execute``), which owns the sqlite3 connection.
        """

        def run() -> T:
            raw = self.conn._conn
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = fn(raw)
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
            return result

        async with self._tx_lock:
            result: T = await asyncio.shield(self.conn._execute(run))  # type: ignore[no-untyped-call]
            return result

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one write statement atomically; returns lastrowid."""
        async with self._tx_lock:
            cur = await self.conn.execute(sql, params)
            rowid = cur.lastrowid or 0
            await cur.close()
            return rowid

    async def put_state(self, key: str, value: Any, now: float) -> None:
        """Store a small JSON document in ``kv_state`` (water machine, locks, schedules, …)."""
        await self.execute(
            "INSERT INTO kv_state(key, value, updated_at) VALUES (?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, json.dumps(value), now),
        )

    async def get_state(self, key: str) -> Any | None:
        """The JSON document stored under ``key``, or None."""
        row = await self.fetchone("SELECT value FROM kv_state WHERE key=?", (key,))
        return None if row is None else json.loads(row["value"])

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[aiosqlite.Row]:
        """Run a query and return all rows."""
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> aiosqlite.Row | None:
        """Run a query and return the first row or None."""
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def size_bytes(self) -> int:
        """Database file size including the WAL."""
        return _file_sizes(self.path)


def _file_sizes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += Path(str(path) + suffix).stat().st_size
        except FileNotFoundError:
            continue
    return total


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements: full-line ``--`` comments dropped, then split on ``;``.

    Our migration files keep semicolons out of string literals and triggers.
    """
    code = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]
