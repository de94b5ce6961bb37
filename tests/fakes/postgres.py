"""A throwaway PostgreSQL cluster on a free 127.0.0.1 port (session fixture ``postgres_dsn``).

Finds ``initdb``/``pg_ctl`` under /usr/lib/postgresql/*/bin, installs the Debian ``postgresql`` package
when it is missing and we are root (CI), and runs the server as the ``postgres`` system user because
PostgreSQL refuses to run as root. Also usable outside pytest: ``with PostgresCluster() as pg: pg.dsn``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

DB_NAME = "hydro_sync"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries are missing and cannot be installed here."""


def find_bin_dir(install: bool = True) -> Path:
    """The newest /usr/lib/postgresql/<v>/bin holding initdb and pg_ctl (installing postgresql as root)."""
    for _ in range(2):
        found = sorted(
            (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        found = [p for p in found if (p / "pg_ctl").exists()]
        if found:
            return found[-1]
        if not install or os.geteuid() != 0:
            break
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "postgresql"], env=env, check=False).returncode:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "postgresql"], env=env, check=True)
        install = False
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
        "install them with `apt-get install -y postgresql` (as root) and re-run the tests"
    )


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """initdb + pg_ctl start in a temp dir; ``stop()`` removes everything."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = find_bin_dir()
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="hydro-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.port = 0
        self.as_root = os.geteuid() == 0
        self.running = False

    def _run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self.as_root:  # postgres refuses root: run every server tool as the postgres system user
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.root)

    def _check(self, proc: subprocess.CompletedProcess[str], what: str) -> None:
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{tail}")

    def start(self) -> PostgresCluster:
        """Create the cluster, start it on a free port, create the database."""
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._check(
            self._run(self.bin / "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C", "--no-sync"),
            "initdb",
        )
        opts = (f"-c listen_addresses=127.0.0.1 -k {self.sockets} -c fsync={'on' if self.fsync else 'off'}"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
                " -c shared_buffers=64MB")
        for _ in range(5):  # the free port can be taken between probe and bind: retry with another
            self.port = free_port()
            proc = self._run(self.bin / "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                             "-w", "-t", "60", "-o", f"-p {self.port} {opts}", "start")
            if proc.returncode == 0:
                break
        self._check(proc, "pg_ctl start")
        self.running = True
        self.create_database(DB_NAME)
        return self

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL through psql over TCP; returns stdout."""
        proc = self._run(self.bin / "psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                         "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql)
        self._check(proc, f"psql {sql!r}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """CREATE DATABASE and return its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def dsn_for(self, name: str) -> str:
        """DSN of a database of this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    @property
    def dsn(self) -> str:
        """DSN of the default test database."""
        return self.dsn_for(DB_NAME)

    def stop(self) -> None:
        """Stop the server (fast) and delete the cluster directory."""
        if self.running:
            self._run(self.bin / "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole test session."""
    started = time.monotonic()
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    print(f"postgres on port {cluster.port} ready in {time.monotonic() - started:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_cluster: PostgresCluster) -> str:
    """DSN of a database in the session's throwaway PostgreSQL cluster."""
    return postgres_cluster.dsn


@pytest.fixture
def fresh_postgres_dsn(postgres_cluster: PostgresCluster) -> str:
    """DSN of a new empty database, so each test starts clean."""
    return postgres_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
