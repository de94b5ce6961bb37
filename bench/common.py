"""Shared pieces of the ingest benchmark: node naming, payloads, /proc probes, commit timeline, stats.

Every bench process imports this module as a sibling (``python bench/<script>.py`` puts bench/ on
sys.path), so it depends on the standard library only.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GH_UID = "gh-bench"
ZONES = ("zone-a", "zone-b", "zone-c", "zone-d")
METRIC = "ph"
# Each step's samples carry raw = seq with seq in [step * SEQ_STRIDE, (step + 1) * SEQ_STRIDE): a
# (node, raw) pair is unique over the whole run, so loss and duplicates are counted exactly.
SEQ_STRIDE = 10_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchNode:
    """One simulated node: its assignment in the gateway config and its telemetry topic."""

    index: int
    uid: str
    hardware_id: str
    zone: str

    @property
    def topic(self) -> str:
        """``hydro/{gh}/{zone}/{node}/telemetry``."""
        return f"hydro/{GH_UID}/{self.zone}/{self.uid}/telemetry"

    def hello(self) -> bytes:
        """A schema-valid node_hello announcing this node."""
        body = {"message_type": "node_hello", "hardware_id": self.hardware_id, "node_type": "ph",
                "fw_version": "1.0.0"}
        return json.dumps(body).encode()


def bench_nodes(count: int) -> list[BenchNode]:
    """The ``count`` nodes of a run, spread over the zones."""
    return [BenchNode(i, f"bn-{i:04d}", f"bench-hw-{i:04d}", ZONES[i % len(ZONES)]) for i in range(count)]


def telemetry_payload(first_seq: int, count: int, ts: float, identity: tuple[str, int] | None = None) -> bytes:
    """One sample (count == 1) or a list of ``count`` samples; raw carries the unique seq, ts the publish time.

    ``identity`` (boot, message number) adds the node message identity: on the sample, or on a
    ``{"samples": [...]}`` batch.
    """
    # Built by hand: the generator must not spend its CPU in json.dumps.
    items = [f'{{"metric_type":"{METRIC}","value":6.5,"ts":{ts:.6f},"raw":{seq}}}'
             for seq in range(first_seq, first_seq + count)]
    if identity is None:
        text = items[0] if count == 1 else "[" + ",".join(items) + "]"
    else:
        tail = f',"boot":"{identity[0]}","seq":{identity[1]}}}'
        text = items[0][:-1] + tail if count == 1 else '{"samples":[' + ",".join(items) + "]" + tail
    return text.encode()


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    """True once 127.0.0.1:port accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---- /proc probes -------------------------------------------------------------------------------

def _proc_fields(path: str) -> dict[str, str]:
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) once it is gone."""
    status = _proc_fields(f"/proc/{pid}/status")

    def kib(key: str) -> int:
        return int(status.get(key, "0 kB").split()[0])

    return kib("VmRSS"), kib("VmHWM")


def write_bytes(pid: int) -> int:
    """Bytes this process caused to be sent to the storage layer (/proc/PID/io write_bytes)."""
    return int(_proc_fields(f"/proc/{pid}/io").get("write_bytes", "0"))


def cpu_seconds(stat_path: str) -> float:
    """User + system CPU time from a /proc/.../stat file (a process: all threads; a task: one thread)."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed ``comm/tid`` (``main`` for the main thread)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            comm = "main" if tid == str(pid) else Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        out[f"{comm}/{tid}"] = cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
    return out


def cpu_pressure_s() -> float:
    """Seconds during which some runnable task waited for a CPU (PSI, /proc/pressure/cpu); 0 if absent."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    return int(first.rsplit("total=", 1)[1]) / 1e6


def host_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole host since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - fields[3] - fields[4]) / CLK_TCK, total / CLK_TCK


@dataclass
class ProcSnapshot:
    """Counters of the system's processes (and of the host) at one moment."""

    at: float
    cpu_s: float
    write_bytes: int
    threads: dict[str, float]
    host_busy_s: float
    host_total_s: float
    cpu_pressure_s: float

    @classmethod
    def take(cls, pids: dict[str, int]) -> ProcSnapshot:
        """Sum CPU and write_bytes over ``pids``; per-thread CPU keyed ``process:thread``."""
        threads = {f"{name}:{t}": cpu for name, pid in pids.items() for t, cpu in thread_cpu(pid).items()}
        busy, total = host_cpu()
        return cls(time.monotonic(), sum(cpu_seconds(f"/proc/{p}/stat") for p in pids.values()),
                   sum(write_bytes(p) for p in pids.values()), threads, busy, total, cpu_pressure_s())

    def busiest_thread(self, before: ProcSnapshot) -> tuple[str, float]:
        """The thread that used the most CPU since ``before``, with the CPU seconds it used."""
        deltas = {k: v - before.threads.get(k, 0.0) for k, v in self.threads.items()}
        name = max(deltas, key=lambda k: deltas[k], default="-")
        return name.rsplit("/", 1)[0], deltas.get(name, 0.0)

    def cpu_wait_frac(self, before: ProcSnapshot) -> float:
        """Share of the time since ``before`` in which some task was runnable but had no CPU."""
        return (self.cpu_pressure_s - before.cpu_pressure_s) / max(self.at - before.at, 1e-6)

    def host_busy_cores(self, before: ProcSnapshot) -> float:
        """CPU cores the whole host kept busy since ``before`` (every process, not only the bench)."""
        wall = max(self.at - before.at, 1e-6)
        return (self.host_busy_s - before.host_busy_s) / wall


# ---- commit timeline ----------------------------------------------------------------------------

@dataclass
class CommitTimeline:
    """(wall time, max(id)) observations of ``telemetry_samples``; the commit time of row N is the first
    observation with max(id) >= N, so it is late by at most one poll interval plus the query time."""

    times: list[float] = field(default_factory=list)
    max_ids: list[int] = field(default_factory=list)

    def observe(self, at: float, max_id: int) -> None:
        """Record a poll result (kept only when max(id) moved)."""
        if not self.max_ids or max_id > self.max_ids[-1]:
            self.times.append(at)
            self.max_ids.append(max_id)

    def commit_time(self, row_id: int) -> float | None:
        """When row ``row_id`` was first seen committed."""
        i = bisect.bisect_left(self.max_ids, row_id)
        return self.times[i] if i < len(self.times) else None

    def committed_between(self, start: float, end: float, base_id: int) -> int:
        """Rows (above ``base_id``) whose commit was observed within [start, end]."""
        def last_id_before(t: float) -> int:
            i = bisect.bisect_right(self.times, t) - 1
            return max(self.max_ids[i], base_id) if i >= 0 else base_id

        return last_id_before(end) - last_id_before(start)


class Monitor(threading.Thread):
    """Polls the system's SQLite file for max(id) and the processes' RSS while a step runs."""

    def __init__(self, db_path: Path, pids: dict[str, int], poll_s: float = 0.01) -> None:
        super().__init__(daemon=True, name="bench-monitor")
        self.db_path = db_path
        self.pids = pids
        self.poll_s = poll_s
        self.timeline = CommitTimeline()
        self.peak_rss_kib: dict[str, int] = dict.fromkeys(pids, 0)
        self.step_peak_kib: dict[str, int] = dict.fromkeys(pids, 0)
        self.max_poll_gap_s = 0.0  # since reset_step_peak(): a starved monitor makes latencies upper bounds
        self._halt = threading.Event()

    def run(self) -> None:
        """Poll until stopped."""
        conn = connect_ro(self.db_path)
        last_rss = 0.0
        last_poll = time.time()
        try:
            while not self._halt.is_set():
                try:
                    row = conn.execute("SELECT max(id) FROM telemetry_samples").fetchone()
                    now_wall = time.time()
                    self.timeline.observe(now_wall, int(row[0] or 0))
                    self.max_poll_gap_s = max(self.max_poll_gap_s, now_wall - last_poll)
                    last_poll = now_wall
                except sqlite3.OperationalError:
                    pass  # locked for an instant by a checkpoint: poll again
                now = time.monotonic()
                if now - last_rss >= 0.1:
                    last_rss = now
                    self.sample_rss()
                self._halt.wait(self.poll_s)
        finally:
            conn.close()

    def sample_rss(self) -> None:
        """Update the peak RSS of every watched process (lifetime: VmHWM too; per step: sampled VmRSS)."""
        for name, pid in self.pids.items():
            rss, hwm = rss_kib(pid)
            self.peak_rss_kib[name] = max(self.peak_rss_kib[name], rss, hwm)
            self.step_peak_kib[name] = max(self.step_peak_kib[name], rss)

    def reset_step_peak(self) -> None:
        """Start a new per-step RSS peak."""
        self.step_peak_kib = dict.fromkeys(self.pids, 0)
        self.max_poll_gap_s = 0.0

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._halt.set()
        self.join(5)


def connect_ro(db_path: Path) -> sqlite3.Connection:
    """A read-only connection that never blocks the writer for long (WAL readers don't)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def max_id(conn: sqlite3.Connection) -> int:
    """Current max(id) of telemetry_samples."""
    return int(conn.execute("SELECT max(id) FROM telemetry_samples").fetchone()[0] or 0)


def rows_above(conn: sqlite3.Connection, base_id: int) -> int:
    """Rows committed after ``base_id`` (a rowid range count: cheap)."""
    return int(conn.execute("SELECT count(*) FROM telemetry_samples WHERE id > ?", (base_id,)).fetchone()[0])


def step_rows(conn: sqlite3.Connection, base_id: int, seq_lo: int, seq_hi: int) -> list[tuple[int, int, str, float]]:
    """(id, node_id, raw, ts) of this step's rows: above ``base_id`` and raw seq within [seq_lo, seq_hi)."""
    rows = conn.execute(
        "SELECT id, node_id, raw, ts FROM telemetry_samples WHERE id > ?"
        " AND CAST(raw AS INTEGER) >= ? AND CAST(raw AS INTEGER) < ?",
        (base_id, seq_lo, seq_hi),
    ).fetchall()
    return [(int(r[0]), int(r[1]), str(r[2]), float(r[3])) for r in rows]


# ---- statistics ---------------------------------------------------------------------------------

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def send_json(stream: Any, obj: dict[str, Any]) -> None:
    """One JSON object per line on a text stream (the parent ↔ child protocol)."""
    stream.write(json.dumps(obj) + "\n")
    stream.flush()


# ---- profile summary ----------------------------------------------------------------------------

# Frames that only carry the loop or a thread (every sample passes through them): left out of the
# inclusive ranking, which should name the code that does the work.
_PLUMBING = ("<frozen runpy>", "asyncio/runners.py", "asyncio/base_events.py", "asyncio/events.py",
             "threading.py", "gateway/cli.py", "gateway/__main__.py", "concurrent/futures/thread.py")


def _split_frame(frame: str) -> tuple[str, str, int]:
    """``func (path/file.py:123)`` → (func, path/file.py, 123)."""
    name, _, where = frame.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    return name, path, int(line) if line.isdigit() else 0


@dataclass
class ProfileSummary:
    """py-spy samples ranked by own time (leaf frame) and by inclusive time, per function."""

    total: int
    idle_removed: int
    own: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]
    threads: dict[str, int]


def summarize_collapsed(text: str, idle_leaves: set[tuple[str, int]], top: int = 15) -> ProfileSummary:
    """Summarise py-spy's raw (collapsed) output recorded with ``--threads``.

    ``idle_leaves`` are (function, line) pairs where a thread blocks waiting for work (a queue get):
    py-spy cannot tell that wait from work, so those samples are dropped.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = idle = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames.pop(0).split(": ", 1)[-1] if frames[0].startswith(("thread ", "process ")) else "?"
        if not frames:
            continue
        leaf_name, leaf_path, leaf_line = _split_frame(frames[-1])
        if (leaf_name, leaf_line) in idle_leaves:
            idle += count
            continue
        total += count
        threads[thread] = threads.get(thread, 0) + count
        key = f"{leaf_name} ({leaf_path})"
        own[key] = own.get(key, 0) + count
        seen = set()
        for frame in frames:
            name, path, _ = _split_frame(frame)
            fkey = f"{name} ({path})"
            if fkey not in seen and not path.endswith(_PLUMBING):
                seen.add(fkey)
                inclusive[fkey] = inclusive.get(fkey, 0) + count

    def rank(d: dict[str, int]) -> list[tuple[str, int]]:
        return sorted(d.items(), key=lambda kv: kv[1], reverse=True)[:top]

    return ProfileSummary(total, idle, rank(own), rank(inclusive), threads)


def cpu_s(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of a process (plus its reaped children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / CLK_TCK


def postgres_cpu_s(data_dir: Path | None) -> float:
    """CPU seconds of the PostgreSQL server and its live backends (0 when it is not ours)."""
    if data_dir is None:
        return 0.0
    try:
        master = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = cpu_s(master, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            total += cpu_s(int(stat.parent.name))
    return total
