"""End-to-end telemetry ingest benchmark: hydro-gateway against a baseline built like the seed system
(Debian's mosquitto + a paho-mqtt subscriber thread + sqlite3 batches), same load, side by side.

    python bench/ingest.py [--nodes 50] [--seconds 20] [--quick]

N simulated nodes (real paho clients in separate generator processes) publish telemetry at QoS 1 in
an open loop, ramping the offered rate; the bench counts rows in telemetry_samples, derives
publish-to-commit latency from a max(id) commit timeline, and samples RSS, CPU and disk writes from
/proc. See bench/README.md for the method and how to read the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common import (
    GH_UID,
    SEQ_STRIDE,
    ZONES,
    Monitor,
    ProcSnapshot,
    bench_nodes,
    connect_ro,
    free_port,
    max_id,
    percentile,
    rows_above,
    step_rows,
    summarize_collapsed,
    wait_port,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# Each system climbs until it fails a step (twice): the top steps are beyond what either sustains on a Pi-class
# or a shared 2-core machine, so the ratio between the systems is measured, not capped by the ramp.
SINGLE_RAMP = (1000, 2000, 4000, 6000, 8000, 11000, 15000, 20000)  # msg/s, 1 sample per message
BATCH_RAMP = (500, 1000, 2000, 3000, 4000, 6000, 8000)  # msg/s, --batch samples per message
TARGET_SINGLE_MSGS = 4000
TARGET_BATCH_SAMPLES = 20000
TARGET_RSS_MB = 80.0
# A step is "sustained" when nothing was lost, every publish was acknowledged, commits kept pace with
# the offered rate in the step's steady part, the backlog drained promptly and the generator kept time.
STEADY_MIN_RATIO = 0.9
DRAIN_MAX_S = 1.5
GEN_LAG_MAX_S = 0.5
MONITOR_GAP_WARN_S = 0.1


class BenchError(RuntimeError):
    """The bench machinery failed (a process died, a port never opened, …)."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Child:
    """A bench child process speaking JSON lines on stdin/stdout; stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     start_new_session=True, cwd=REPO)
        self._buf = b""

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def send(self, obj: dict[str, Any]) -> None:
        """Write one command line."""
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write((json.dumps(obj) + "\n").encode())
        stdin.flush()

    def event(self, timeout: float) -> dict[str, Any]:
        """The next JSON line from the child; BenchError on timeout, exit or an ``error`` event."""
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no answer within {timeout:.0f} s\n{_tail(self.log_path)}")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    rc = self.proc.wait(5)
                    raise BenchError(f"{self.name} exited with {rc}\n{_tail(self.log_path)}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == "error":
            raise BenchError(f"{self.name}: {event}")
        return event

    def stop(self, timeout: float = 20.0) -> None:
        """Close stdin (the child's signal to finish), then escalate if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.send({"cmd": "quit"})
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        _reap(self.proc, timeout)
        self._log.close()


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class System(Protocol):
    """A system under test: something that accepts MQTT telemetry and commits it to SQLite."""

    name: str
    label: str
    db_path: Path
    mqtt_port: int

    def start(self) -> None: ...
    def wait_registered(self, nodes: int) -> None: ...
    def counters(self) -> dict[str, float]: ...
    def pids(self) -> dict[str, int]: ...
    def stop(self) -> None: ...


_COUNTERS = ("hydro_ingest_commit_seconds_", "hydro_ingest_batch_rows_", "hydro_ingest_samples_total",
             "hydro_messages_rejected_total")


class GatewaySystem:
    """hydro-gateway as a subprocess (``python -m gateway run --config …``) with a generated config."""

    name = "gateway"
    label = "hydro-gateway"

    identity = True  # the generators send the node message identity (boot, seq): dedupe is exercised
    synchronous = "NORMAL"
    tree = REPO  # the source tree the gateway runs from

    def __init__(self, workdir: Path, nodes: int, *, gateway_id: str = "gw-bench", extra_config: str = "") -> None:
        self.gateway_id = gateway_id
        self.extra_config = extra_config  # appended TOML sections, e.g. [upstream]
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True)
        self.db_path = self.dir / "data" / "gateway.db"
        self.mqtt_port = free_port()
        self.web_port = free_port()
        self.nodes = nodes
        self.log_path = self.dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        """The generated TOML: demo mode (anonymous MQTT), default ingest batching, the bench nodes."""
        lines = [
            "[gateway]", f'id = "{self.gateway_id}"', f'greenhouse_uid = "{GH_UID}"', 'mode = "demo"',
            f'data_dir = "{self.dir / "data"}"', 'log_level = "INFO"', "",
            "[broker]", 'host = "127.0.0.1"', f"port = {self.mqtt_port}", "allow_anonymous = true", "",
            "[web]", 'host = "127.0.0.1"', f"port = {self.web_port}", 'admin_token = "bench"', "",
            "[ingest]", f'synchronous = "{self.synchronous}"', "",
        ]
        for zone in ZONES:
            lines += ["[[zones]]", f'uid = "{zone}"', ""]
        for n in bench_nodes(self.nodes):
            lines += ["[[nodes]]", f'hardware_id = "{n.hardware_id}"', f'uid = "{n.uid}"', f'zone = "{n.zone}"',
                      'node_type = "ph"', ""]
        return "\n".join(lines) + self.extra_config

    def start(self) -> None:
        """Start the gateway and wait until its web port (opened after the broker) answers."""
        cfg = self.dir / "gateway.toml"
        cfg.write_text(self.config())
        with open(self.log_path, "wb") as log:
            env = {**os.environ, "PYTHONPATH": str(self.tree)}  # this tree's code, not the venv's install
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg)], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.tree)
        if not wait_port(self.web_port, 60) or self.proc.poll() is not None:
            raise BenchError(f"gateway did not start\n{_tail(self.log_path)}")

    def wait_registered(self, nodes: int) -> None:
        """Wait until every node's hello made it validated and assigned (its telemetry is accepted then)."""
        conn = connect_ro(self.db_path)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                count = conn.execute("SELECT count(*) FROM nodes WHERE validated = 1").fetchone()[0]
                if count >= nodes:
                    return
                time.sleep(0.05)
        finally:
            conn.close()
        raise BenchError(f"gateway registered {count}/{nodes} nodes\n{_tail(self.log_path)}")

    def counters(self) -> dict[str, float]:
        """The gateway's own ingest counters from GET /metrics (Prometheus text), summed per series name."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(_COUNTERS):
                series, _, value = line.rpartition(" ")
                name = series if "result=\"rejected\"" in series or "rejected_total" in series else series.split("{")[0]
                out[name] = out.get(name, 0.0) + float(value)
        return out

    def pids(self) -> dict[str, int]:
        """The gateway process."""
        assert self.proc is not None
        return {"gateway": self.proc.pid}

    def stop(self) -> None:
        """SIGTERM (the gateway flushes and closes), escalate if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            _reap(self.proc, 20)


class GatewayNoIdentitySystem(GatewaySystem):
    """The same gateway, nodes without the message identity (older firmware): the dedupe's cost is the difference."""

    name = "gateway-noid"
    label = "gateway, no identity"
    identity = False


class GatewayFullSyncSystem(GatewaySystem):
    """The same gateway with ``[ingest] synchronous = "FULL"`` (an fsync per commit)."""

    name = "gateway-full"
    label = "gateway, synchronous FULL"
    synchronous = "FULL"


class GatewayRefSystem(GatewaySystem):
    """The gateway from another source tree (``--ref-tree``, e.g. ``git archive main``): before/after in one run."""

    name = "gateway-ref"
    label = "gateway @ref-tree"


def ensure_mosquitto() -> str:
    """Path of Debian's mosquitto binary, installing the package (as root) if it is missing."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("mosquitto is not installed: run `apt-get install -y mosquitto` as root")
    print("installing mosquitto (apt-get install -y mosquitto) …", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "mosquitto"], env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "mosquitto"], env=env, capture_output=True, check=True)
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class BaselineSystem:
    """mosquitto on a free port with a generated config (no system service) + bench/baseline_seed.py."""

    name = "baseline"
    label = "baseline (mosquitto+paho+sqlite3)"

    def __init__(self, workdir: Path, nodes: int) -> None:
        self.dir = workdir / "baseline"
        self.dir.mkdir(parents=True)
        self.db_path = self.dir / "baseline.db"
        self.mqtt_port = free_port()
        self.nodes = nodes
        self.log_path = self.dir / "mosquitto.log"
        self.mosquitto: subprocess.Popen[bytes] | None = None
        self.subscriber: Child | None = None

    def config(self) -> str:
        """Generous limits so the broker never drops a queued QoS 1 message; TCP_NODELAY like asyncio."""
        return "\n".join([
            f"listener {self.mqtt_port} 127.0.0.1", "allow_anonymous true", "persistence false",
            "max_inflight_messages 1000", "max_queued_messages 0", "set_tcp_nodelay true",
            "log_dest stderr", "log_type error", "log_type warning", "",
        ])

    def start(self) -> None:
        """Start mosquitto, then the subscriber; returns once it is subscribed."""
        binary = ensure_mosquitto()
        cfg = self.dir / "mosquitto.conf"
        cfg.write_text(self.config())
        with open(self.log_path, "wb") as log:
            self.mosquitto = subprocess.Popen([binary, "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        if not wait_port(self.mqtt_port, 20) or self.mosquitto.poll() is not None:
            raise BenchError(f"mosquitto did not start\n{_tail(self.log_path)}")
        self.subscriber = Child("baseline subscriber", [
            sys.executable, str(BENCH_DIR / "baseline_seed.py"), "--port", str(self.mqtt_port),
            "--db", str(self.db_path), "--nodes", str(self.nodes)], self.dir / "subscriber.log")
        self.subscriber.event(30)

    def wait_registered(self, nodes: int) -> None:
        """The seed resolves node uids from its own table; nothing to wait for."""

    def counters(self) -> dict[str, float]:
        """The baseline exports no counters."""
        return {}

    def pids(self) -> dict[str, int]:
        """mosquitto and the subscriber."""
        assert self.mosquitto is not None and self.subscriber is not None
        return {"mosquitto": self.mosquitto.pid, "subscriber": self.subscriber.pid}

    def stop(self) -> None:
        """Subscriber first (final flush), then the broker."""
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.mosquitto is not None and self.mosquitto.poll() is None:
            self.mosquitto.terminate()
            _reap(self.mosquitto, 10)


class Generators:
    """The load generator processes; each owns every ``procs``-th node."""

    def __init__(self, workdir: Path, port: int, nodes: int, procs: int, inflight: int, identity: bool = False) -> None:
        self.children = [
            Child(f"load generator {i}", [
                sys.executable, str(BENCH_DIR / "load_nodes.py"), "--port", str(port), "--nodes", str(nodes),
                "--procs", str(procs), "--proc-index", str(i), "--inflight", str(inflight),
                *(["--identity"] if identity else [])],
                workdir / f"load_nodes_{port}_{i}.log")
            for i in range(procs)
        ]
        for child in self.children:
            child.event(60)

    def step(self, start_at: float, rate: float, seconds: float, batch: int, seq_base: int) -> list[dict[str, Any]]:
        """Run one step in every generator (each at its share of the rate); their ``done`` reports."""
        for child in self.children:
            child.send({"cmd": "step", "start_at": start_at, "rate": rate / len(self.children),
                        "seconds": seconds, "batch": batch, "seq_base": seq_base})
        return [child.event(seconds + 180) for child in self.children]

    def stop(self) -> None:
        """Disconnect and end every generator."""
        for child in self.children:
            child.stop()


@dataclass
class StepResult:
    """What one load step measured on one system."""

    system: str
    mode: str
    batch: int
    rate_msgs: float
    seconds: float
    offered_samples_s: float
    sent_samples: int = 0
    acked_msgs: int = 0
    all_acked: bool = False
    committed: int = 0
    duplicates: int = 0
    lost: int = 0
    steady_samples_s: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    drain_s: float = math.nan
    write_bytes_per_sample: float = math.nan
    cpu_us_per_sample: float = math.nan
    gen_max_lag_s: float = 0.0
    gen_cpu_frac: float = 0.0
    peak_rss_mb: float = math.nan
    busiest_thread: str = "-"
    busiest_thread_cores: float = 0.0
    busiest_thread_us_per_sample: float = math.nan
    commit_ms_avg: float = math.nan
    batch_rows_avg: float = math.nan
    ack_p50_ms: float = math.nan  # publish() -> PUBACK seen by the node
    ack_p99_ms: float = math.nan
    commits_per_s: float = math.nan
    write_bytes_per_s: float = math.nan
    host_busy_cores: float = 0.0
    other_cores: float = 0.0
    cpu_wait_frac: float = 0.0
    monitor_max_gap_s: float = 0.0
    sustained: bool = False
    attempt: int = 1
    committed_per_half_s: list[int] = field(default_factory=list)  # from the step's start to its last commit
    notes: list[str] = field(default_factory=list)


@dataclass
class SystemResult:
    """Every step of one system plus its resource peaks and profiles."""

    system: str
    label: str
    steps: list[StepResult] = field(default_factory=list)
    idle_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    ramp_peak_rss_mb: dict[str, float] = field(default_factory=dict)  # before the py-spy profiling pass
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


def wait_drain(conn: Any, base: int, expected: int, stall_s: float) -> int:
    """Wait until ``expected`` rows landed above ``base`` or nothing new arrived for ``stall_s``."""
    last, last_change = -1, time.monotonic()
    while True:
        n = rows_above(conn, base)
        if n >= expected:
            return n
        now = time.monotonic()
        if n != last:
            last, last_change = n, now
        elif now - last_change > stall_s:
            return n
        time.sleep(0.02)


@dataclass
class StepRaw:
    """What a step leaves behind before analysis: generator reports, the step's rows, /proc counters."""

    start_at: float
    done: list[dict[str, Any]]
    rows: list[tuple[int, int, str, float]]
    base_id: int
    before: ProcSnapshot
    after: ProcSnapshot
    parent_cpu_s: float
    counters: dict[str, float]  # the system's own counters: after - before


def run_step(system: System, gens: Generators, monitor: Monitor, index: int, mode: str, batch: int,
             rate: float, seconds: float, profiler: list[str] | None = None) -> tuple[StepResult, str | None]:
    """Offer ``rate`` msg/s for ``seconds``, wait for the drain and measure; optionally under py-spy."""
    seq_lo = index * SEQ_STRIDE
    pids = system.pids()
    conn = connect_ro(system.db_path)
    spy: subprocess.Popen[bytes] | None = None
    try:
        base = max_id(conn)
        before = ProcSnapshot.take(pids)
        counters_before = system.counters()
        parent_before = sum(os.times()[:2])
        monitor.reset_step_peak()
        start_at = time.time() + 0.5
        if profiler is not None:
            spy = subprocess.Popen(profiler, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        done = gens.step(start_at, rate, seconds, batch, seq_lo)
        wait_drain(conn, base, sum(int(d["sent_samples"]) for d in done), stall_s=5.0)
        time.sleep(5 * monitor.poll_s)  # let the monitor observe the last commit
        after = ProcSnapshot.take(pids)
        parent_cpu = sum(os.times()[:2]) - parent_before
        counters = {k: v - counters_before.get(k, 0.0) for k, v in system.counters().items()}
        raw = StepRaw(start_at, done, step_rows(conn, base, seq_lo, seq_lo + SEQ_STRIDE), base, before, after,
                      parent_cpu, counters)
    finally:
        conn.close()
    spy_err = None
    if spy is not None:
        _, err = spy.communicate(timeout=60)
        spy_err = err.decode(errors="replace") if spy.returncode else None
    res = StepResult(system.name, mode, batch, rate, seconds, rate * batch)
    analyse(res, raw, monitor)
    return res, spy_err


def analyse(res: StepResult, raw: StepRaw, monitor: Monitor) -> None:
    """Fill ``res`` from the step's rows, the commit timeline and the counters; decide "sustained"."""
    done, rows = raw.done, raw.rows
    res.sent_samples = sum(int(d["sent_samples"]) for d in done)
    res.acked_msgs = sum(int(d["acked"]) for d in done)
    res.all_acked = all(bool(d["all_acked"]) for d in done)
    res.committed = len({(node, raw_seq) for _, node, raw_seq, _ in rows})
    res.duplicates = len(rows) - res.committed
    res.lost = res.sent_samples - res.committed
    res.gen_max_lag_s = max(float(d["max_lag_s"]) for d in done)
    acks = [d for d in done if d.get("ack_p50_s") is not None]
    if acks:  # the slowest generator's view (each owns a share of the nodes)
        res.ack_p50_ms = 1000 * max(float(d["ack_p50_s"]) for d in acks)
        res.ack_p99_ms = 1000 * max(float(d["ack_p99_s"]) for d in acks)
    res.gen_cpu_frac = max(float(d["cpu_s"]) / max(float(d["publish_s"]), 1e-3) for d in done)
    res.notes += [str(e) for d in done for e in d.get("errors", [])]
    publish_end = raw.start_at + max(float(d["publish_s"]) for d in done)
    timeline = monitor.timeline
    latencies = sorted(t - ts for row_id, _, _, ts in rows if (t := timeline.commit_time(row_id)) is not None)
    if latencies:
        res.p50_ms = 1000 * percentile(latencies, 50)
        res.p99_ms = 1000 * percentile(latencies, 99)
        res.max_ms = 1000 * latencies[-1]
    if rows:
        last_commit = timeline.commit_time(max(r[0] for r in rows)) or publish_end
        res.drain_s = max(0.0, last_commit - publish_end)
        buckets = math.ceil((last_commit - raw.start_at) / 0.5)
        res.committed_per_half_s = [
            timeline.committed_between(raw.start_at + 0.5 * k, raw.start_at + 0.5 * (k + 1), raw.base_id)
            for k in range(max(0, buckets))]
    warm = min(1.0, 0.2 * res.seconds)  # skip the first second: batches and queues fill up
    window = publish_end - (raw.start_at + warm)
    if window > 0:
        res.steady_samples_s = timeline.committed_between(raw.start_at + warm, publish_end, raw.base_id) / window
    before, after = raw.before, raw.after
    wall = max(after.at - before.at, 1e-6)
    res.peak_rss_mb = sum(monitor.step_peak_kib.values()) / 1024
    res.busiest_thread, busiest_cpu = after.busiest_thread(before)
    res.busiest_thread_cores = busiest_cpu / wall
    if res.committed:
        res.write_bytes_per_sample = (after.write_bytes - before.write_bytes) / res.committed
        res.cpu_us_per_sample = 1e6 * (after.cpu_s - before.cpu_s) / res.committed
        res.busiest_thread_us_per_sample = 1e6 * busiest_cpu / res.committed
    res.write_bytes_per_s = (after.write_bytes - before.write_bytes) / wall
    res.host_busy_cores = after.host_busy_cores(before)
    res.cpu_wait_frac = after.cpu_wait_frac(before)
    res.monitor_max_gap_s = monitor.max_poll_gap_s
    if res.monitor_max_gap_s > MONITOR_GAP_WARN_S:
        res.notes.append(f"{res.system} {res.mode} {res.rate_msgs:.0f}: the commit monitor was starved for "
                         f"{res.monitor_max_gap_s:.2f} s (CPU contention): its latencies are upper bounds")
    ours = after.cpu_s - before.cpu_s + sum(float(d["cpu_s"]) for d in done) + raw.parent_cpu_s
    res.other_cores = max(0.0, res.host_busy_cores - ours / wall)
    c = raw.counters
    if c.get("hydro_ingest_commit_seconds_count"):
        res.commit_ms_avg = 1000 * c["hydro_ingest_commit_seconds_sum"] / c["hydro_ingest_commit_seconds_count"]
        res.batch_rows_avg = c["hydro_ingest_batch_rows_sum"] / max(1.0, c["hydro_ingest_batch_rows_count"])
        res.commits_per_s = c["hydro_ingest_batch_rows_count"] / wall
    res.notes += [f"{res.system} {res.mode} {res.rate_msgs:.0f}: {v:.0f} x {k}" for k, v in c.items()
                  if "rejected" in k and v > 0]
    res.sustained = (
        res.lost == 0 and res.all_acked and res.steady_samples_s >= STEADY_MIN_RATIO * res.offered_samples_s
        and res.drain_s <= DRAIN_MAX_S and res.gen_max_lag_s <= GEN_LAG_MAX_S
    )
    if res.gen_max_lag_s > GEN_LAG_MAX_S:
        res.notes.append(f"generator fell {res.gen_max_lag_s:.2f} s behind schedule: load-generator limited")


@dataclass
class Plan:
    """What to run: ramps per mode, step length, profiling."""

    nodes: int
    procs: int
    inflight: int
    batch: int
    single_ramp: tuple[float, ...]
    batch_ramp: tuple[float, ...]
    step_seconds: float
    full_ramp: bool
    attempts: int
    profile: bool
    systems: tuple[str, ...]

    def modes(self) -> list[tuple[str, int, tuple[float, ...]]]:
        """(mode name, samples per message, ramp) for each mode."""
        return [("single", 1, self.single_ramp), (f"batch{self.batch}", self.batch, self.batch_ramp)]


@dataclass
class Running:
    """A started system with its load generators and monitor."""

    system: System
    gens: Generators
    monitor: Monitor
    result: SystemResult


def start_system(system: System, plan: Plan, workdir: Path, cleanup: contextlib.ExitStack) -> Running:
    """Start the system, connect its generators (nodes say hello), start its monitor; register the stops."""
    result = SystemResult(system.name, system.label)
    cleanup.callback(system.stop)  # callbacks run last-in first-out, each even if another one failed
    system.start()
    gens = Generators(workdir, system.mqtt_port, plan.nodes, plan.procs, plan.inflight,
                      bool(getattr(system, "identity", False)))
    cleanup.callback(gens.stop)
    system.wait_registered(plan.nodes)
    monitor = Monitor(system.db_path, system.pids())
    monitor.start()
    monitor.sample_rss()
    result.idle_rss_mb = {k: v / 1024 for k, v in monitor.peak_rss_kib.items()}

    def stop_monitor() -> None:
        monitor.sample_rss()
        monitor.stop()
        result.peak_rss_mb = {k: v / 1024 for k, v in monitor.peak_rss_kib.items()}

    cleanup.callback(stop_monitor)
    return Running(system, gens, monitor, result)


def run_all(systems: list[System], plan: Plan, workdir: Path) -> list[SystemResult]:
    """Start every system, then walk the ramps with the systems' steps interleaved (so both see the same
    background load on a shared machine), then profile the gateway; stop everything."""
    with contextlib.ExitStack() as cleanup:
        running = [start_system(s, plan, workdir, cleanup) for s in systems]
        index = 0
        for mode, batch, ramp in plan.modes():
            active = list(running)
            for rate in ramp:
                for r in list(active):
                    # A failed step is retried once: on a shared machine a burst of someone else's work
                    # can sink a single 5 s step; a real limit fails twice.
                    for attempt in range(1, plan.attempts + 1):
                        index += 1
                        step, _ = run_step(r.system, r.gens, r.monitor, index, mode, batch, rate, plan.step_seconds)
                        step.attempt = attempt
                        r.result.steps.append(step)
                        _print_step(r.system.label, step)
                        if step.sustained:
                            break
                    if not step.sustained and not plan.full_ramp:
                        active.remove(r)
        for r in running:
            r.monitor.sample_rss()
            r.result.ramp_peak_rss_mb = {k: v / 1024 for k, v in r.monitor.peak_rss_kib.items()}
            if plan.profile and isinstance(r.system, GatewaySystem):
                for mode, batch, ramp in plan.modes():
                    index += 1
                    r.result.profiles[mode] = profile_step(r.system, r.gens, r.monitor, workdir, index, mode, batch,
                                                           max(ramp), plan.step_seconds)
    return [r.result for r in running]


def idle_wait_leaves() -> set[tuple[str, int]]:
    """(function, line) of the queue waits where the aiosqlite and executor threads idle; py-spy's idle
    detection misses them (a blocked SimpleQueue.get looks busy), so their samples are dropped."""
    import concurrent.futures.thread as cft
    import inspect

    found: set[tuple[str, int]] = set()
    targets: list[tuple[Any, str]] = [(cft._worker, "work_queue.get(")]
    try:
        import aiosqlite.core

        targets.append((aiosqlite.core._connection_worker_thread, "tx.get("))
    except ImportError:
        pass
    for func, needle in targets:
        lines, first = inspect.getsourcelines(func)
        found.update((func.__name__, first + i) for i, text in enumerate(lines) if needle in text)
    return found


def profile_step(system: GatewaySystem, gens: Generators, monitor: Monitor, workdir: Path, index: int,
                 mode: str, batch: int, rate: float, seconds: float) -> dict[str, Any]:
    """One more step at ``rate`` with py-spy recording the gateway; the summary of where its time went."""
    out = workdir / f"profile_{mode}.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy not found: .venv/bin/pip install py-spy"}
    cmd = [spy, "record", "--pid", str(system.pids()["gateway"]), "--duration", str(math.ceil(seconds) + 1),
           "--rate", "100", "--nonblocking", "--format", "raw", "--threads", "--output", str(out)]
    step, err = run_step(system, gens, monitor, index, mode, batch, rate, seconds, cmd)
    _print_step(system.label + " under py-spy", step)
    if not out.exists():
        return {"error": f"py-spy produced no output: {err}"}
    summary = summarize_collapsed(out.read_text(), idle_wait_leaves())
    return {"file": str(out), "rate_msgs": rate, "batch": batch, "committed_samples_s": step.steady_samples_s,
            "busiest_thread": step.busiest_thread, "busiest_thread_cores": step.busiest_thread_cores,
            **asdict(summary)}


# ---- report ------------------------------------------------------------------------------------

def _fmt(value: float, spec: str = ".0f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _print_step(label: str, s: StepResult) -> None:
    commit = "" if math.isnan(s.commit_ms_avg) else f", commit {s.commit_ms_avg:.1f} ms/batch of {s.batch_rows_avg:.0f}"
    print(f"  [{label}] {s.mode} {s.rate_msgs:.0f} msg/s: committed {s.committed}/{s.sent_samples} "
          f"(lost {s.lost}), steady {s.steady_samples_s:.0f}/{s.offered_samples_s:.0f} samples/s, "
          f"p50 {_fmt(s.p50_ms)} ms p99 {_fmt(s.p99_ms)} ms, drain {_fmt(s.drain_s, '.2f')} s, "
          f"{s.busiest_thread} {s.busiest_thread_cores:.2f} cores, others {s.other_cores:.1f} cores, "
          f"cpu-wait {s.cpu_wait_frac:.0%}, monitor gap {s.monitor_max_gap_s:.2f} s{commit}, "
          f"PUBACK p50 {_fmt(s.ack_p50_ms, '.1f')} ms p99 {_fmt(s.ack_p99_ms, '.1f')} ms"
          f"{'' if s.sustained else '  NOT SUSTAINED'}", file=sys.stderr, flush=True)


def best_steps(steps: list[StepResult], mode: str) -> list[StepResult]:
    """One step per rate of ``mode``, by rate: a sustained attempt if there was one, else the better try."""
    by_rate: dict[float, StepResult] = {}
    for s in steps:
        if s.mode != mode:
            continue
        held = by_rate.get(s.rate_msgs)
        if held is None or (s.sustained, s.steady_samples_s) > (held.sustained, held.steady_samples_s):
            by_rate[s.rate_msgs] = s
    return [by_rate[r] for r in sorted(by_rate)]


def max_sustained(steps: list[StepResult], mode: str) -> tuple[float, float]:
    """(msg/s, samples/s) of the highest step of an unbroken run of sustained steps from the bottom."""
    best = (0.0, 0.0)
    for s in best_steps(steps, mode):
        if not s.sustained:
            break
        best = (s.rate_msgs, s.offered_samples_s)
    return best


def overload_rate(steps: list[StepResult], mode: str) -> float:
    """Samples/s committed during the first rate that was not sustained (the capacity under overload)."""
    failed = [s for s in best_steps(steps, mode) if not s.sustained]
    return failed[0].steady_samples_s if failed else math.nan


def _ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"


def _step_cells(s: StepResult | None) -> tuple[str, str]:
    if s is None:
        return f"{'(not run)':>38}", f"{'':>38}"
    main = (f"{s.steady_samples_s:>8.0f} {s.lost:>6} {_fmt(s.p50_ms):>5} {_fmt(s.p99_ms):>5} "
            f"{_fmt(s.drain_s, '.2f'):>5} {('yes' if s.sustained else 'NO') + ('*' if s.attempt > 1 else ''):<4}")
    thread = f"{s.busiest_thread[:18]} {s.busiest_thread_cores:.2f}"
    res = f"{_fmt(s.cpu_us_per_sample):>6} {_fmt(s.write_bytes_per_sample):>5} {thread:>25}"
    return main, res


def render(results: list[SystemResult], plan: Plan, meta: dict[str, Any]) -> str:
    """The human report: per-step tables side by side, summary with ratios and targets, profiles."""
    out: list[str] = []
    w = out.append
    by_name = {r.system: r for r in results}
    gw, base = by_name.get("gateway"), by_name.get("baseline")
    w(f"hydro-gateway ingest benchmark: {plan.nodes} nodes, QoS 1 (paho max_inflight {plan.inflight}), "
      f"{plan.procs} generator process(es), {plan.step_seconds:g} s per step, {meta['cpus']} CPUs, "
      f"load avg at start {meta['loadavg']}")
    if meta.get("quick"):
        w("QUICK SMOKE RUN: checks the machinery and zero loss; rates and targets below mean nothing")
    w("commit/s: samples committed per s in the step's steady part; p50/p99: publish (scheduled) -> commit seen "
      "(max(id) polled every 10 ms); drain: last commit after the last publish; ok: sustained (* = on the 2nd try)")
    for mode, batch, _ramp in plan.modes():
        w("")
        w(f"== {mode}: {batch} sample(s) per message")
        w(f"{'offered':>14} | {'hydro-gateway':^38} | {'baseline (mosquitto+paho+sqlite3)':^38} | ratio")
        cols = "commit/s   lost   p50   p99 drain ok  "
        w(f"{'msg/s samp/s':>14} | {cols:>38} | {cols:>38} | gw/base")
        rates = sorted({s.rate_msgs for r in results for s in r.steps if s.mode == mode})
        resources = []
        for rate in rates:
            pair = [next((s for s in best_steps(r.steps, mode) if s.rate_msgs == rate), None) if r else None
                    for r in (gw, base)]
            cells = [_step_cells(s) for s in pair]
            ratio = _ratio(pair[0].steady_samples_s, pair[1].steady_samples_s) if pair[0] and pair[1] else "-"
            w(f"{rate:>6.0f} {rate * batch:>7.0f} | {cells[0][0]} | {cells[1][0]} | {ratio}")
            host = max((s.host_busy_cores for s in pair if s), default=0.0)
            other = max((s.other_cores for s in pair if s), default=0.0)
            wait = max((s.cpu_wait_frac for s in pair if s), default=0.0)
            resources.append(f"{rate:>6.0f} {rate * batch:>7.0f} | {cells[0][1]} | {cells[1][1]} | "
                             f"{host:.1f} / {other:.1f} / {wait:.0%}")
        w(f"{'':>14} | {'CPU us/sample, disk B/sample, busiest thread (cores)':^38}".rstrip()
          + f" {'':>38}   host busy / others (cores) / cpu-wait")
        out.extend(resources)
    w("")
    w(f"== summary (max sustained = highest ramp step with zero loss, commits >= {STEADY_MIN_RATIO:.0%} of "
      f"offered, drain <= {DRAIN_MAX_S} s)")
    w(f"{'':40} {'hydro-gateway':>14} {'baseline':>14} {'ratio':>6}  target")
    for mode, _b, _r in plan.modes():
        single = mode == "single"
        g = max_sustained(gw.steps, mode)[0 if single else 1] if gw else math.nan
        b = max_sustained(base.steps, mode)[0 if single else 1] if base else math.nan
        target = TARGET_SINGLE_MSGS if single else TARGET_BATCH_SAMPLES
        verdict = "" if not gw else ("PASS" if g >= target else "MISS")
        if gw and base:
            verdict += ", >= baseline PASS" if g >= b else ", >= baseline MISS"
        label = f"max sustained {mode} " + ("msg/s" if single else "samples/s")
        w(f"{label:40} {_fmt(g):>14} {_fmt(b):>14} {_ratio(g, b):>6}  >= {target} {verdict}")
        og = overload_rate(gw.steps, mode) if gw else math.nan
        ob = overload_rate(base.steps, mode) if base else math.nan
        w(f"{'  samples/s committed at first overload':40} {_fmt(og):>14} {_fmt(ob):>14} {_ratio(og, ob):>6}")
    lost = [sum(s.lost for s in r.steps) if r else 0 for r in (gw, base)]
    dups = [sum(s.duplicates for s in r.steps) if r else 0 for r in (gw, base)]
    w(f"{'lost samples, all steps (duplicates)':40} {f'{lost[0]} ({dups[0]})':>14} {f'{lost[1]} ({dups[1]})':>14}"
      f"{'':>8}0 " + ("PASS" if gw and lost[0] == 0 else "MISS" if gw else ""))
    # The target is judged on every ramp step, sustained or not; the profiling pass that follows slows the
    # gateway under py-spy until its bounded buffers fill, so its peak is shown apart.
    g_rss = gw.ramp_peak_rss_mb.get("gateway", math.nan) if gw else math.nan
    b_rss = sum(base.ramp_peak_rss_mb.values()) if base else math.nan
    w(f"{'peak RSS MB, all steps (base: both)':40} {_fmt(g_rss, '.1f'):>14} {_fmt(b_rss, '.1f'):>14} "
      f"{_ratio(g_rss, b_rss):>6}  <= {TARGET_RSS_MB:.0f} " + ("" if not gw else "PASS" if g_rss <= TARGET_RSS_MB
                                                                else "MISS"))
    if gw and gw.profiles:
        g_all = gw.peak_rss_mb.get("gateway", math.nan)
        w(f"{'  peak RSS MB incl. profiling under py-spy':40} {_fmt(g_all, '.1f'):>14}")
    g_ok = max((s.peak_rss_mb for s in gw.steps if s.sustained), default=math.nan) if gw else math.nan
    b_ok = max((s.peak_rss_mb for s in base.steps if s.sustained), default=math.nan) if base else math.nan
    w(f"{'  peak RSS MB in sustained steps only':40} {_fmt(g_ok, '.1f'):>14} {_fmt(b_ok, '.1f'):>14}")
    g_idle = gw.idle_rss_mb.get("gateway", math.nan) if gw else math.nan
    b_idle = sum(base.idle_rss_mb.values()) if base else math.nan
    w(f"{'  RSS MB after connect, before load':40} {_fmt(g_idle, '.1f'):>14} {_fmt(b_idle, '.1f'):>14}")
    if base:
        w("  baseline peaks: " + ", ".join(f"{k} {v:.1f} MB" for k, v in base.peak_rss_mb.items()))
    for key, label in (("write_bytes_per_sample", "disk bytes written / sample"),
                       ("cpu_us_per_sample", "CPU us / sample, all threads"),
                       ("busiest_thread_us_per_sample", "CPU us / sample, busiest thread")):
        for mode, _b, _r in plan.modes():
            vals = []
            for r in (gw, base):
                steps = [s for s in best_steps(r.steps, mode) if s.sustained] if r else []
                vals.append(getattr(steps[-1], key) if steps else math.nan)
            w(f"{label + ' (' + mode + ')':40} {_fmt(vals[0], '.1f'):>14} {_fmt(vals[1], '.1f'):>14} "
              f"{_ratio(vals[0], vals[1]):>6}  at the top sustained step")
    w("  (a single busiest thread bounds throughput at 1e6 / its us per sample even on an idle machine)")
    steps = [s for r in results for s in r.steps]
    if steps:
        w(f"{'load generator: max CPU, max lag':40} {max(s.gen_cpu_frac for s in steps):>13.0%} "
          f"{max(s.gen_max_lag_s for s in steps):>13.3f}s  per process; lag > {GEN_LAG_MAX_S} s = load-limited")
    w("")
    w("== every system at its top sustained step (PUBACK: publish() -> PUBACK at the node; fsync/s est.: FULL syncs")
    w("   the WAL at every commit, both sync at each checkpoint (~every 4 MB of WAL): 2 per checkpoint)")
    w(f"{'system':28} {'mode':8} {'max msg/s':>9} {'PUBACK p50':>10} {'p99 ms':>7} {'commit/s':>8} "
      f"{'fsync/s est':>11} {'B/sample':>8} {'peak RSS MB':>11}")
    for r in results:
        for mode, _b, _r in plan.modes():
            ok = [s for s in best_steps(r.steps, mode) if s.sustained]
            top = ok[-1] if ok else None
            rss = sum(r.ramp_peak_rss_mb.values())
            if top is None:
                w(f"{r.label:28} {mode:8} {'none':>9} {'':>10} {'':>7} {'':>8} {'':>11} {'':>8} {rss:>11.1f}")
                continue
            checkpoints = top.write_bytes_per_s / 2 / (1000 * 4096)
            fsyncs = 2 * checkpoints + (top.commits_per_s if r.system.endswith("full") else 0.0)
            w(f"{r.label:28} {mode:8} {top.rate_msgs:>9.0f} {_fmt(top.ack_p50_ms, '.1f'):>10} "
              f"{_fmt(top.ack_p99_ms, '.1f'):>7} {_fmt(top.commits_per_s):>8} {_fmt(fsyncs, '.1f'):>11} "
              f"{_fmt(top.write_bytes_per_sample):>8} {rss:>11.1f}")
    for note in sorted({n for s in steps for n in s.notes})[:10]:
        w(f"note: {note}")
    for mode, prof in gw.profiles.items() if gw else []:
        out.extend(_render_profile(mode, prof, meta))
    return "\n".join(out)


def _render_profile(mode: str, prof: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    if "error" in prof:
        return ["", f"== gateway profile ({mode}): {prof['error']}"]
    total = max(1, int(prof["total"]))
    where = prof["file"] if meta.get("kept") else "rerun with --workdir DIR to keep the raw stacks"
    lines = [
        "",
        f"== gateway profile, {mode} at {prof['rate_msgs']:.0f} msg/s offered ({prof['committed_samples_s']:.0f} "
        f"samples/s committed; busiest thread {prof['busiest_thread']} at {prof['busiest_thread_cores']:.2f} "
        f"cores); py-spy at 100 Hz, {total} busy samples ({prof['idle_removed']} queue-wait samples dropped); "
        f"{where}",
        "   own%  top functions by own time (leaf frame)",
    ]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in prof["own"]]
    lines.append("  incl%  top functions by inclusive time (loop/thread plumbing left out)")
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in prof["inclusive"]]
    by_thread = sorted(prof["threads"].items(), key=lambda kv: -kv[1])
    threads = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in by_thread)
    lines.append(f"  samples by thread: {threads}")
    return lines


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    """Command line → options and the run plan."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=50, help="simulated nodes (default 50)")
    p.add_argument("--seconds", type=float, default=40.0,
                   help="offered-load seconds per ramp, split evenly over its steps (default 40: 5 s a step)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 nodes, 2 s, one low-rate step per mode")
    p.add_argument("--procs", type=int, default=2, help="load generator processes (default 2)")
    p.add_argument("--inflight", type=int, default=1000, help="paho max_inflight_messages per node")
    p.add_argument("--batch", type=int, default=10, help="samples per message in the batched mode")
    p.add_argument("--ramp-single", help="comma-separated msg/s (default 1000,2000,4000,6000,8000,11000,15000,20000)")
    p.add_argument("--ramp-batch", help="comma-separated msg/s of batched messages (default 500,...,8000)")
    p.add_argument("--full-ramp", action="store_true", help="keep ramping after a step is not sustained")
    p.add_argument("--attempts", type=int, default=2, help="tries per step before a ramp stops (default 2)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of the gateway")
    p.add_argument("--systems", default="gateway,baseline", help="which systems to run")
    p.add_argument("--ref-tree", type=Path,
                   help="source tree of a reference gateway for the gateway-ref system (before/after in one run)")
    p.add_argument("--workdir", type=Path, help="keep databases, logs and profiles here (default: a temp dir)")
    p.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.seconds, args.procs, args.no_profile = 2, 2.0, 1, True
        args.ramp_single, args.ramp_batch = args.ramp_single or "100", args.ramp_batch or "20"

    def ramp(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(x) for x in text.split(",")) if text else default

    single, batch = ramp(args.ramp_single, SINGLE_RAMP), ramp(args.ramp_batch, BATCH_RAMP)
    plan = Plan(
        nodes=args.nodes, procs=max(1, min(args.procs, args.nodes)), inflight=args.inflight, batch=args.batch,
        single_ramp=single, batch_ramp=batch, step_seconds=args.seconds / max(len(single), len(batch)),
        full_ramp=args.full_ramp, attempts=1 if args.quick else max(1, args.attempts), profile=not args.no_profile,
        systems=tuple(s.strip() for s in args.systems.split(",") if s.strip()),
    )
    return args, plan


def main(argv: list[str] | None = None) -> int:
    """Run the plan on each system, print the report, optionally write JSON."""
    args, plan = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hydro-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    meta: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                            "workdir": str(workdir), "started": started}
    print(f"bench workdir: {workdir}", file=sys.stderr)
    if os.environ.get("PYTHONASYNCIODEBUG"):
        print("warning: PYTHONASYNCIODEBUG is set: the gateway runs in asyncio debug mode (slower)", file=sys.stderr)
    systems: dict[str, type[GatewaySystem] | type[BaselineSystem]] = {
        "gateway": GatewaySystem, "baseline": BaselineSystem, "gateway-noid": GatewayNoIdentitySystem,
        "gateway-full": GatewayFullSyncSystem, "gateway-ref": GatewayRefSystem}
    if args.ref_tree is not None:
        GatewayRefSystem.tree = args.ref_tree.resolve()
    elif "gateway-ref" in plan.systems:
        print("gateway-ref needs --ref-tree", file=sys.stderr)
        return 2
    try:
        results = run_all([systems[name](workdir, plan.nodes) for name in plan.systems], plan, workdir)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    meta["elapsed_s"] = time.time() - started
    meta["kept"] = args.workdir is not None
    meta["quick"] = bool(args.quick)
    print(render(results, plan, meta))
    if args.json_out:
        args.json_out.write_text(json.dumps({"meta": meta, "plan": asdict(plan),
                                             "results": [asdict(r) for r in results]}, indent=1, default=str))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
