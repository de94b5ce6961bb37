"""The one SQLite connection of the gateway: WAL, numbered forward-only migrations, explicit transactions."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import aiosqlite

log = logging.getLogger(__name__)
T = TypeVar("T")
# Positional (``?``) or named (``:name``) parameters of one statement.
Params = Sequence[object] | Mapping[str, object]

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed or failed to apply."""


class DatabaseCorrupt(RuntimeError):
    """The SQLite file failed its integrity check, is not a database, or corruption was reported."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"database {path} is corrupt: {reason}")
        self.path = path
        self.reason = reason


# SQLITE_CORRUPT and SQLITE_NOTADB (primary result codes).
_CORRUPT_CODES = {11, 26}
_CORRUPT_WORDS = ("malformed", "not a database", "corrupt")


def is_corruption(exc: BaseException) -> bool:
    """True if ``exc`` (or what it wraps) says the database file itself is damaged."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DatabaseCorrupt):
            return True
        if isinstance(cur, sqlite3.DatabaseError):
            code = getattr(cur, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
                return True
            if any(word in str(cur).lower() for word in _CORRUPT_WORDS):
                return True
        cur = cur.__cause__ or cur.__context__
    return False


def corrupt_marker(path: Path) -> Path:
    """The file a running gateway leaves when SQLite reports corruption, so the next start moves the DB aside."""
    return Path(str(path) + ".corrupt-detected")


def mark_corrupt(path: Path, reason: str) -> None:
    """Leave the marker (best effort: we are usually crashing when this runs)."""
    try:
        corrupt_marker(path).write_text(reason[:2000] + "\n", encoding="utf-8")
    except OSError as exc:
        log.error("could not leave the corruption marker next to %s: %s", path, exc)


@dataclass(frozen=True)
class CorruptRecovery:
    """A damaged database was moved aside and a fresh one started."""

    reason: str
    moved: tuple[str, ...]  # where the file and its -wal/-shm went
    new_generation: str


def move_aside(path: Path, stamp: str) -> list[str]:
    """Rename the database and its -wal/-shm to ``<name>.corrupt-<stamp>[-wal|-shm]``; returns the new paths."""
    moved: list[str] = []
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if not src.exists():
            continue
        dst = Path(f"{path}.corrupt-{stamp}{suffix}")
        if not suffix:  # never overwrite an earlier damaged copy moved aside in the same second
            n = 1
            while dst.exists():
                stamp, n = f"{stamp.split('.')[0]}.{n}", n + 1
                dst = Path(f"{path}.corrupt-{stamp}")
        os.replace(src, dst)
        moved.append(str(dst))
    with suppress(FileNotFoundError):
        corrupt_marker(path).unlink()
    return moved


async def open_or_recover(
    db: Database, *, on_corrupt: str = "move_aside", check_max_bytes: int | None = None
) -> CorruptRecovery | None:
    """Open ``db``; if the file is damaged, move it aside and start a fresh one (or raise with ``"exit"``).

    The file is checked with ``PRAGMA quick_check`` first unless it is larger than ``check_max_bytes``
    (reading gigabytes from an SD card would hold the start for minutes): then ``db.check_pending`` is
    set and the caller runs ``db.check_in_background()``. Returns what was done when the file had to be
    replaced, None for a healthy file. Errors that are not corruption (permissions, disk full, a bad
    migration) are raised unchanged.
    """
    full = check_max_bytes is None or _file_sizes(db.path) <= check_max_bytes
    try:
        await db.open(quick_check=full)
        db.check_pending = not full
        return None
    except Exception as exc:
        if not is_corruption(exc):
            raise
        reason = exc.reason if isinstance(exc, DatabaseCorrupt) else f"{type(exc).__name__}: {exc}"
    if on_corrupt == "exit":
        raise DatabaseCorrupt(db.path, reason + " (storage.on_corrupt = \"exit\": not starting; move the file"
                              " aside or restore it, then start again)")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = move_aside(db.path, stamp)
    log.critical("database %s is corrupt (%s): moved aside to %s, starting a fresh one", db.path, reason, moved)
    await db.open()
    return CorruptRecovery(reason=reason, moved=tuple(moved), new_generation=db.generation)


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

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self._conn: aiosqlite.Connection | None = None
        self._tx_lock = asyncio.Lock()
        self._generation: str | None = None
        self.created = False  # True when this open() gave the file its first generation (a new database)
        # Called once with the first SQLITE_CORRUPT seen at run time (the gateway then restarts so that
        # the start-up path moves the file aside); services that retry errors would otherwise spin on it.
        self.on_corruption: Callable[[BaseException], None] | None = None
        self.check_pending = False  # opened without quick_check: run check_in_background()
        self._corruption_seen = False

    def _seen(self, exc: BaseException) -> None:
        if self._corruption_seen or self.on_corruption is None or not is_corruption(exc):
            return
        self._corruption_seen = True
        try:
            self.on_corruption(exc)
        except Exception:
            log.exception("on_corruption hook failed")

    @property
    def generation(self) -> str:
        """Random id of this database file's sequence space (see migration 0040)."""
        if self._generation is None:
            raise RuntimeError("database is not open")
        return self._generation

    @property
    def conn(self) -> aiosqlite.Connection:
        """The open connection (raises if closed)."""
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self, migrations: Iterable[tuple[int, str, str]] | None = None, *, quick_check: bool = True) -> None:
        """Open the file, check it (``PRAGMA quick_check`` unless told not to), set WAL, apply migrations."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        marker = corrupt_marker(self.path)
        if marker.exists():
            reason = marker.read_text(encoding="utf-8", errors="replace").strip()
            raise DatabaseCorrupt(self.path, f"corruption reported at run time: {reason}")
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            self._conn = conn
            await conn.execute("PRAGMA journal_mode=WAL")
            # Either way a commit survives kill -9 (it is in the OS page cache). NORMAL in WAL mode: a power
            # cut loses at most the commits since the last checkpoint, never corrupts; FULL: an fsync per commit.
            await conn.execute(f"PRAGMA synchronous={self.synchronous}")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            if quick_check:
                async with conn.execute("PRAGMA quick_check(5)") as cur:
                    problems = [str(r[0]) for r in await cur.fetchall()]
                if problems != ["ok"]:
                    raise DatabaseCorrupt(self.path, "quick_check: " + "; ".join(problems)[:500])
            await self._migrate(bundled_migrations() if migrations is None else list(migrations))
            await self._load_generation()
        except BaseException:
            # Close the connection, or its (non-daemon) aiosqlite thread keeps the process alive forever.
            self._conn = None
            with suppress(Exception):
                await conn.close()
            raise

    async def check_in_background(self) -> None:
        """``PRAGMA quick_check`` on a separate read-only connection (for files too large to check at start);
        raises DatabaseCorrupt, after reporting it through ``on_corruption``."""

        def check() -> list[str]:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                return [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
            finally:
                conn.close()

        try:
            problems = await asyncio.to_thread(check)
        except sqlite3.DatabaseError as exc:
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems != ["ok"]:
            corrupt = DatabaseCorrupt(self.path, "quick_check: " + "; ".join(problems)[:500])
            self._seen(corrupt)
            raise corrupt
        log.info("database %s passed its quick_check", self.path)

    async def _load_generation(self) -> None:
        row = await self.fetchone("SELECT value FROM db_meta WHERE key = 'generation'")
        self.created = row is None
        if row is None:
            await self.new_generation()
        else:
            self._generation = str(row[0])

    async def new_generation(self) -> str:
        """Start a new sequence space: from now on every batch is keyed by a fresh random generation."""
        generation = secrets.token_hex(8)
        await self.execute(
            "INSERT INTO db_meta(key, value, updated_at) VALUES ('generation', ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (generation, time.time()),
        )
        self._generation = generation
        return generation

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
            except BaseException as exc:
                self._seen(exc)
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
            try:
                result: T = await asyncio.shield(self.conn._execute(run))  # type: ignore[no-untyped-call]
            except Exception as exc:
                self._seen(exc)
                raise
            return result

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one write statement atomically; returns lastrowid."""
        async with self._tx_lock:
            try:
                cur = await self.conn.execute(sql, params)
            except Exception as exc:
                self._seen(exc)
                raise
            rowid = cur.lastrowid or 0
            await cur.close()
            return rowid

    async def put_state(self, key: str, value: object, now: float) -> None:
        """Store a small JSON document in ``kv_state`` (water machine, locks, schedules, …)."""
        await self.execute(
            "INSERT INTO kv_state(key, value, updated_at) VALUES (?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, json.dumps(value), now),
        )

    async def get_state(self, key: str) -> object:
        """The JSON document stored under ``key``, or None (callers narrow it to the shape they stored)."""
        row = await self.fetchone("SELECT value FROM kv_state WHERE key=?", (key,))
        return None if row is None else json.loads(row["value"])

    async def fetchall(self, sql: str, params: Params = ()) -> list[aiosqlite.Row]:
        """Run a query and return all rows."""
        try:
            async with self.conn.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except Exception as exc:
            self._seen(exc)
            raise

    async def fetchone(self, sql: str, params: Params = ()) -> aiosqlite.Row | None:
        """Run a query and return the first row or None."""
        try:
            async with self.conn.execute(sql, params) as cur:
                return await cur.fetchone()
        except Exception as exc:
            self._seen(exc)
            raise

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
