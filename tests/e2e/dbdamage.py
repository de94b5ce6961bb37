"""Real damage to a real SQLite file, the way power cuts, bad SD cards and careless restores do it."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from pathlib import Path

PAGE = 4096


def checkpoint(path: Path) -> None:
    """Fold the WAL into the main file so the damage below hits the data itself."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def truncate(path: Path) -> None:
    """Cut the file in the middle of a page (a copy interrupted halfway)."""
    checkpoint(path)
    size = path.stat().st_size
    os.truncate(path, size // 2 + 123)


def garbage_header(path: Path, seed: int = 1) -> None:
    """Overwrite the 100-byte header and the rest of page 1."""
    checkpoint(path)
    _overwrite(path, 0, PAGE, seed)


def overwrite_page(path: Path, seed: int = 2) -> None:
    """Overwrite one page in the middle of the file with random bytes."""
    checkpoint(path)
    pages = path.stat().st_size // PAGE
    _overwrite(path, (pages // 2) * PAGE, PAGE, seed)


def garbage_in_wal(wal: Path, seed: int = 3) -> None:
    """Overwrite 64 KiB in the middle of a WAL file (frames after that fail their checksums)."""
    size = wal.stat().st_size
    start = max(32, size // 2 - 32 * 1024)
    _overwrite(wal, start, min(64 * 1024, size - start), seed)


def copy_database(src: Path, dst: Path) -> None:
    """A consistent copy of a live database (what a backup taken a moment ago looks like)."""
    for suffix in ("-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.execute("PRAGMA busy_timeout=5000")
        source.backup(target)
    source.close()
    target.close()


def replace_with(path: Path, copy: Path) -> None:
    """Put ``copy`` in place of the database at ``path`` (no -wal/-shm of the replaced file stay behind)."""
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    shutil.copyfile(copy, path)


def _overwrite(path: Path, offset: int, length: int, seed: int) -> None:
    data = random.Random(seed).randbytes(length)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
