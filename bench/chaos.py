"""Chaos benchmark: kill -9 the real gateway again and again while real MQTT nodes publish at QoS 1,
then count every acknowledged sample in PostgreSQL.

    python bench/chaos.py                          # 200 gateway kills, throwaway PostgreSQL
    python bench/chaos.py --kills 20 --restore-older-copy --json-out /tmp/chaos.json
    python bench/chaos.py --dsn postgresql://...   # an existing PostgreSQL (a fresh gateway id per run)

What runs (loopback only): the gateway as a process (``python -m gateway run`` with a generated config,
demo mode), ``--nodes`` paho-mqtt nodes publishing telemetry at QoS 1, each sample carrying a unique
number in ``raw`` (and the message identity ``boot``/``seq`` when the telemetry schema has it), and
upstream the reference receiver (``python -m sync.receiver``) on PostgreSQL behind a small TCP proxy
that can cut the link.

Faults, each driven by observed progress rather than by the clock: before every kill the nodes must
have received more PUBACKs than at the previous kill (plus a random stride), so each kill lands while
the gateway is really working, on any machine. Then the gateway is SIGKILLed and restarted; now and
then the receiver is SIGKILLed too (restarted a moment later) or the upstream link is cut for a few
seconds; with ``--restore-older-copy`` the gateway's database is replaced, while it is down, by a copy
taken a few seconds earlier (issue 20). At the end the nodes stop, every outstanding message gets its
PUBACK, the gateway drains its backlog upstream, and the bench prints:

- kills, samples PUBACKed (paho's ``on_publish`` per message);
- lost = PUBACKed but absent from PostgreSQL; duplicated = numbers stored more than once;
- catch-up rate after each upstream outage and for the final drain;
- a compact per-kill table.

Exit status 0 only when nothing was lost or duplicated. Every wait is bounded; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run as files; the PostgreSQL helper lives in tests/fakes

import asyncpg
import paho.mqtt.client as mqtt
from common import BenchNode, bench_nodes, wait_port
from ingest import BenchError, GatewaySystem
from paho.mqtt.enums import CallbackAPIVersion

from tests.fakes.postgres import PostgresCluster

TOKEN = "chaos-token"
NUMBER_STRIDE = 10**9  # sample number = node index * stride + per-node counter: unique over the run
PROGRESS_TIMEOUT_S = 120.0  # the gateway must acknowledge something new within this, or the run fails
DRAIN_STALL_S = 60.0  # the final drain gives up when nothing moved for this long


# ---- upstream: the reference receiver behind a cuttable proxy -----------------------------------

class Receiver:
    """``python -m sync.receiver`` on PostgreSQL; can be SIGKILLed and started again (new port)."""

    def __init__(self, dsn: str, log_path: Path) -> None:
        self.dsn = dsn
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> None:
        """Start it and read the port it listens on."""
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sync.receiver", "--dsn", self.dsn, "--port", "0", "--token", TOKEN],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            raise BenchError(f"receiver did not start: {line!r}")
        self.port = int(line.split()[-1].rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        """Whether the process is up."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        """SIGTERM, escalate if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class CutProxy(threading.Thread):
    """A loopback TCP proxy to the receiver's current port; ``cut`` drops every connection, old and new."""

    def __init__(self, target: Callable[[], int]) -> None:
        super().__init__(daemon=True, name="chaos-proxy")
        self.target = target
        self.cut = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []

    def run(self) -> None:
        """Accept until stopped; each connection gets a forwarding thread."""
        self._listener.settimeout(0.2)
        while not self._halt.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target()), timeout=2)
            except OSError:  # the receiver is down: the gateway sees a refused connection
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()

    def _forward(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self._halt.is_set() and not self.cut:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                with contextlib.suppress(ValueError):
                    self._pairs.remove((a, b))
            a.close()
            b.close()

    def set_cut(self, cut: bool) -> None:
        """Cut (every open connection is dropped, new ones are closed at once) or restore the link."""
        self.cut = cut
        if cut:
            with self._lock:
                pairs = list(self._pairs)
            for a, b in pairs:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Stop accepting and close the listener."""
        self._halt.set()
        self.join(5)
        self._listener.close()


# ---- the nodes ----------------------------------------------------------------------------------

def identity_placement() -> str | None:
    """Where the telemetry contract takes a message identity (``boot``/``seq``): 'sample', 'batch' or None."""
    schema = json.loads((ROOT / "firmware_contracts" / "schemas" / "telemetry.json").read_text())
    defs = schema.get("$defs", {})
    if "seq" in defs.get("sample", {}).get("properties", {}):
        return "sample"
    if "seq" in defs.get("batch", {}).get("properties", {}):
        return "batch"
    return None


class Node:
    """One paho-mqtt node (its own network thread) that remembers which of its numbers got a PUBACK."""

    def __init__(self, node: BenchNode, port: int, identity: str | None) -> None:
        self.node = node
        self.identity = identity
        self.boot = random.randrange(1, 2**31)
        self.counter = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node.uid, clean_session=False)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}  # mid -> number, until its PUBACK
        self._early: set[int] = set()  # PUBACKs seen before publish() returned the mid
        self.acked: list[int] = []
        self.port = port

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.publish("hydro/node_hello", self.node.hello(), qos=1)

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            number = self._pending.pop(mid, None)
            if number is None:
                self._early.add(mid)
            else:
                self.acked.append(number)

    def start(self) -> None:
        """Connect (paho keeps reconnecting by itself across gateway restarts)."""
        self.client.connect_async("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()

    @property
    def pending(self) -> int:
        """Published, not yet acknowledged."""
        return len(self._pending)

    def publish_next(self) -> None:
        """Publish the next numbered sample at QoS 1 (queued by paho while the gateway is down)."""
        self.counter += 1
        number = self.node.index * NUMBER_STRIDE + self.counter
        sample: dict[str, Any] = {"metric_type": "ph", "value": 6.5, "ts": round(time.time(), 3), "raw": number}
        body: Any = sample
        if self.identity == "sample":
            sample.update(boot=self.boot, seq=self.counter - 1)  # 0 is the first data message of a boot
        elif self.identity == "batch":
            body = {"boot": self.boot, "seq": self.counter - 1, "samples": [sample]}
        info = self.client.publish(self.node.topic, json.dumps(body), qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked.append(number)
            else:
                self._pending[info.mid] = number

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


class Publisher(threading.Thread):
    """Publishes ``rate`` samples/s round-robin over the nodes; a node holding ``max_pending`` unacknowledged
    messages waits (a real node's buffer is bounded too)."""

    def __init__(self, nodes: list[Node], rate: float, max_pending: int) -> None:
        super().__init__(daemon=True, name="chaos-publisher")
        self.nodes = nodes
        self.rate = rate
        self.max_pending = max_pending
        self.held_back = 0
        self._halt = threading.Event()

    def run(self) -> None:
        """Open loop at ``rate``; never catches up a backlog of missed slots (no burst after a stall)."""
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        i = 0
        while not self._halt.is_set():
            node = self.nodes[i % len(self.nodes)]
            i += 1
            if node.pending >= self.max_pending:
                self.held_back += 1
            else:
                node.publish_next()
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        """Stop publishing new samples (outstanding ones still get their PUBACK)."""
        self._halt.set()
        self.join(5)

    def acked(self) -> int:
        """PUBACKs received so far over every node."""
        return sum(len(n.acked) for n in self.nodes)

    def pending(self) -> int:
        """Messages still waiting for a PUBACK."""
        return sum(n.pending for n in self.nodes)


# ---- the gateway --------------------------------------------------------------------------------

class ChaosGateway(GatewaySystem):
    """The bench gateway, restarted many times: its log is appended to, never truncated."""

    def start(self) -> None:
        """Start the process and wait until its web port (opened after the broker) answers."""
        cfg = self.dir / "gateway.toml"
        cfg.write_text(self.config())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        if not wait_port(self.web_port, 90) or self.proc.poll() is not None:
            raise BenchError(f"gateway did not start (see {self.log_path})")

    def kill9(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def local_max_id(self) -> int | None:
        """max(id) of the local telemetry_samples (None when unreadable this instant)."""
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
            try:
                return int(conn.execute("SELECT max(id) FROM telemetry_samples").fetchone()[0] or 0)
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def snapshot(self, dest: Path) -> None:
        """A consistent copy of the live database (SQLite's online backup)."""
        src = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()

    def restore(self, copy: Path) -> None:
        """Replace the (stopped) gateway's database by ``copy``: what a restored backup or a lost page cache does."""
        for suffix in ("-wal", "-shm"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)
        shutil.copyfile(copy, self.db_path)


# ---- the run ------------------------------------------------------------------------------------

@dataclass
class KillRow:
    """What was seen around one gateway kill."""

    n: int
    t: float  # seconds since the nodes started
    faults: str  # gw, +rx (receiver killed), +cut (upstream cut began), +restore (older copy restored)
    acked: int  # PUBACKs the nodes had when the gateway died
    pending: int  # messages in flight or queued at the nodes at that moment
    local: int | None  # local max(id) after the kill
    upstream: int  # rows for this gateway in PostgreSQL at the kill
    restart_s: float  # from SIGKILL to the new process listening
    lost: int = 0  # of the samples PUBACKed since the previous kill: absent upstream
    duplicated: int = 0  # of those: stored more than once


@dataclass
class Outage:
    """An upstream outage (cut or receiver down) and how fast the gateway caught up afterwards."""

    kind: str
    started: float
    seconds: float | None = None  # set when it ends
    backlog: int = 0
    catch_up_s: float | None = None

    @property
    def rate(self) -> float | None:
        """Rows/s uploaded while catching up."""
        return self.backlog / self.catch_up_s if self.catch_up_s else None


@dataclass
class Chaos:
    """The state of a run: processes, nodes, fault timers, observations."""

    args: argparse.Namespace
    dsn: str
    work: Path
    gateway_id: str
    rng: random.Random
    gateway: ChaosGateway | None = None
    receiver: Receiver | None = None
    proxy: CutProxy | None = None
    publisher: Publisher | None = None
    pg: asyncpg.Connection | None = None
    t0: float = 0.0
    cut_until: float | None = None
    receiver_back_at: float | None = None
    outages: list[Outage] = field(default_factory=list)
    catching_up: list[tuple[Outage, int, int, float]] = field(default_factory=list)  # outage, mark, pg0, t
    rows: list[KillRow] = field(default_factory=list)
    snapshot_at: float | None = None
    schedule: list[tuple[int, bool, bool, float, float]] = field(default_factory=list)
    rx_due: bool = False  # a receiver kill is scheduled but the receiver is still down from the last one
    cut_due: bool = False  # likewise for a cut
    local_floor: int = -1  # local max(id) when the current incarnation started
    restores: list[float] = field(default_factory=list)  # age of each restored copy, s
    marks: list[list[int]] = field(default_factory=list)  # per kill: PUBACKs each node had, to attribute losses
    snapshot_marks: list[int] = field(default_factory=list)  # PUBACKs each node had just before the copy
    erased: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (copy, restore) marks per restore

    async def upstream_rows(self) -> int:
        """Telemetry rows PostgreSQL holds for this gateway."""
        assert self.pg is not None
        return int(await self.pg.fetchval("SELECT count(*) FROM telemetry_samples WHERE gateway_id = $1",
                                          self.gateway_id))

    async def upstream_max_seq(self) -> int:
        """Highest telemetry seq upstream for this gateway."""
        assert self.pg is not None
        return int(await self.pg.fetchval("SELECT coalesce(max(seq), 0) FROM telemetry_samples"
                                          " WHERE gateway_id = $1", self.gateway_id))

    async def tick(self) -> None:
        """End outages that are due, start catch-up clocks, finish the ones that caught up."""
        now = time.monotonic()
        assert self.proxy is not None and self.receiver is not None
        if self.cut_until is not None and now >= self.cut_until:
            self.proxy.set_cut(False)
            self.cut_until = None
            await self._outage_ended("cut")
        if self.receiver_back_at is not None and now >= self.receiver_back_at:
            await asyncio.to_thread(self.receiver.start)
            self.receiver_back_at = None
            await self._outage_ended("receiver")
        if self.catching_up:
            top = await self.upstream_max_seq()
            for entry in list(self.catching_up):
                outage, mark, pg0, started = entry
                if top >= mark:
                    outage.backlog = max(0, mark - pg0)
                    outage.catch_up_s = time.monotonic() - started
                    self.catching_up.remove(entry)

    async def _outage_ended(self, kind: str) -> None:
        outage = next(o for o in reversed(self.outages) if o.kind == kind and o.seconds is None)
        outage.seconds = time.monotonic() - outage.started
        mark = self.gateway.local_max_id() if self.gateway else None
        if mark is not None:
            self.catching_up.append((outage, mark, await self.upstream_max_seq(), time.monotonic()))

    async def wait_progress(self, target: int, committed_above: int = -1) -> None:
        """Until the nodes hold ``target`` PUBACKs and the gateway's local max(id) passed ``committed_above``
        (bounded: a stuck gateway fails the run)."""
        assert self.publisher is not None and self.gateway is not None and self.gateway.proc is not None
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while self.publisher.acked() < target or (self.gateway.local_max_id() or 0) <= committed_above:
            if self.gateway.proc.poll() is not None:
                raise BenchError(f"gateway exited with {self.gateway.proc.returncode} (see {self.gateway.log_path})")
            if time.monotonic() > deadline:
                raise BenchError(f"no new PUBACK within {PROGRESS_TIMEOUT_S:.0f} s: {self.publisher.acked()} acked,"
                                 f" waiting for {target}; {self.publisher.pending()} pending")
            await self.tick()
            await asyncio.sleep(0.02)

    def plan(self) -> None:
        """Draw every kill's faults up front, so a seed gives the same schedule however fast the machine is."""
        args, rng = self.args, self.rng
        self.schedule = [(1 + rng.randrange(max(1, int(args.rate))), rng.random() < args.receiver_kill_prob,
                          rng.random() < args.cut_prob, rng.uniform(0.5, 3.0), rng.uniform(2.0, args.cut_max_s))
                         for _ in range(args.kills)]

    async def kill_once(self, n: int) -> None:
        """Wait for progress, then SIGKILL the gateway (sometimes the receiver, a cut, a restore) and restart."""
        assert self.publisher and self.gateway and self.receiver and self.proxy
        args = self.args
        stride, rx, cut, rx_down_s, cut_s = self.schedule[n - 1]
        self.rx_due, self.cut_due = self.rx_due or rx, self.cut_due or cut  # deferred while one is still on
        # Progress is both: new PUBACKs (the nodes' view) and new rows committed by this incarnation (after
        # a restart the nodes' resent backlog is acknowledged in a burst, long before it is committed).
        last = self.rows[-1].acked if self.rows else 0
        await self.wait_progress(last + stride, self.local_floor)
        faults = ["gw"]
        if self.rx_due and self.receiver_back_at is None:
            self.rx_due = False
            self.receiver.kill()
            self.receiver_back_at = time.monotonic() + rx_down_s
            self.outages.append(Outage("receiver", time.monotonic()))
            faults.append("rx")
        if self.cut_due and self.cut_until is None:
            self.cut_due = False
            self.proxy.set_cut(True)
            self.cut_until = time.monotonic() + cut_s
            self.outages.append(Outage("cut", time.monotonic()))
            faults.append("cut")
        restore = args.restore_older_copy and n % args.restore_every == 0 and self.snapshot_at is not None
        acked, pending = self.publisher.acked(), self.publisher.pending()
        marks = [len(node.acked) for node in self.publisher.nodes]
        killed_at = time.monotonic()
        self.gateway.kill9()
        local = self.gateway.local_max_id()
        upstream = await self.upstream_rows()
        if restore:
            assert self.snapshot_at is not None
            # what was PUBACKed after the copy was taken is not in it: lost unless already uploaded
            self.erased.append((self.snapshot_marks, marks))
            self.gateway.restore(self.work / "older-copy.db")
            self.restores.append(killed_at - self.snapshot_at)
            self.snapshot_at = None
            faults.append("restore")
        self.local_floor = self.gateway.local_max_id() or 0
        await asyncio.to_thread(self.gateway.start)
        self.marks.append(marks)
        self.rows.append(KillRow(n, round(killed_at - self.t0, 1), "+".join(faults), acked, pending, local, upstream,
                                 round(time.monotonic() - killed_at, 2)))
        # the copy to restore is taken a few kills before it is used: "a copy taken a few seconds earlier"
        if args.restore_older_copy and (n + 3) % args.restore_every == 0:
            await self.wait_progress(self.publisher.acked() + 1)
            self.snapshot_marks = [len(node.acked) for node in self.publisher.nodes]
            await asyncio.to_thread(self.gateway.snapshot, self.work / "older-copy.db")
            self.snapshot_at = time.monotonic()

    async def drain(self) -> dict[str, Any]:
        """Stop the nodes, let every outstanding message get its PUBACK, then let the gateway upload it all."""
        assert self.publisher and self.gateway and self.proxy
        while self.cut_until is not None or self.receiver_back_at is not None:
            await self.tick()
            await asyncio.sleep(0.05)
        catch_up: dict[str, Any] = {}
        if self.args.final_cut_s > 0:
            # A clean catch-up figure: upstream cut for a while with no kills, the nodes still publishing,
            # then the time until PostgreSQL holds everything the gateway had committed when the link came back.
            self.proxy.set_cut(True)
            cut_end = time.monotonic() + self.args.final_cut_s
            while time.monotonic() < cut_end:
                await self.tick()
                await asyncio.sleep(0.1)
            mark, pg0 = self.gateway.local_max_id() or 0, await self.upstream_max_seq()
            self.proxy.set_cut(False)
            started = time.monotonic()
            deadline = started + PROGRESS_TIMEOUT_S
            first: tuple[float, int] | None = None  # (when, max seq) at the first upload after the cut
            while (top := await self.upstream_max_seq()) < mark and time.monotonic() < deadline:
                if first is None and top > pg0:
                    first = (time.monotonic(), top)
                await asyncio.sleep(0.02)
            ended = time.monotonic()
            resumed_s = (first[0] if first else ended) - started
            # the rate counts rows uploaded after the first batch landed (the wait for the uplink's backoff
            # to retry is reported apart as resumed_s)
            rate = (mark - first[1]) / (ended - first[0]) if first and ended > first[0] and mark > first[1] else None
            catch_up = {"final_cut_s": self.args.final_cut_s, "backlog": mark - pg0,
                        "caught_up_s": round(ended - started, 2), "resumed_s": round(resumed_s, 2),
                        "rows_per_s": round(rate) if rate else None}
        self.publisher.stop()
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while self.publisher.pending() and time.monotonic() < deadline:
            await self.tick()
            await asyncio.sleep(0.05)
        started = time.monotonic()
        pg0 = await self.upstream_rows()
        last_change, last = started, -1
        while True:
            await self.tick()
            local = self.gateway.local_max_id()
            top = await self.upstream_max_seq()
            if local is not None and top >= local:
                break
            if top != last:
                last_change, last = time.monotonic(), top
            if time.monotonic() - last_change > DRAIN_STALL_S:
                break
            await asyncio.sleep(0.1)
        drain_s = time.monotonic() - started
        await asyncio.sleep(0.5)  # one more uplink round: nothing may still be in flight
        uploaded = await self.upstream_rows() - pg0
        return {"unacked_at_end": self.publisher.pending(), "drain_s": round(drain_s, 2), "drain_rows": uploaded,
                "drain_rows_per_s": round(uploaded / drain_s) if drain_s > 0 else None, "catch_up": catch_up}

    async def count(self) -> dict[str, Any]:
        """Compare every PUBACKed number with what PostgreSQL holds."""
        assert self.publisher and self.pg is not None
        stored: dict[int, int] = {}
        for r in await self.pg.fetch("SELECT raw, count(*) AS n FROM telemetry_samples WHERE gateway_id = $1"
                                     " GROUP BY raw", self.gateway_id):
            with contextlib.suppress(TypeError, ValueError):
                stored[int(r["raw"])] = int(r["n"])  # raw holds the number as JSON text
        acked = [x for node in self.publisher.nodes for x in node.acked]
        acked_set = set(acked)
        lost = sorted(x for x in acked_set if x not in stored)
        duplicated = sorted(x for x, n in stored.items() if n > 1)
        starts = [[0] * len(self.publisher.nodes), *self.marks]
        # PUBACKed after an older copy was taken and before it replaced the database: never in the copy
        after_copy = {x for lo_marks, hi_marks in self.erased
                      for node, lo, hi in zip(self.publisher.nodes, lo_marks, hi_marks, strict=True)
                      for x in node.acked[lo:hi]}
        for row, marks, before in zip(self.rows, self.marks, starts, strict=False):
            window = [x for node, lo, hi in zip(self.publisher.nodes, before, marks, strict=True)
                      for x in node.acked[lo:hi]]
            row.lost = sum(1 for x in window if x not in stored)
            row.duplicated = sum(1 for x in window if stored.get(x, 0) > 1)
        return {
            "published": sum(n.counter for n in self.publisher.nodes),
            "acked": len(acked),
            "acked_twice": len(acked) - len(acked_set),
            "lost": len(lost),
            "lost_acked_after_the_restored_copy": sum(1 for x in lost if x in after_copy),
            "duplicated": len(duplicated),
            "duplicate_rows": sum(stored[x] - 1 for x in duplicated),
            "stored_not_acked": sum(1 for x in stored if x not in acked_set),
            "lost_examples": lost[:10],
            "duplicated_examples": duplicated[:10],
        }


async def run(args: argparse.Namespace, dsn: str, work: Path) -> dict[str, Any]:
    """The whole run; returns the figures."""
    chaos = Chaos(args, dsn, work, f"gw-chaos-{uuid.uuid4().hex[:8]}", random.Random(args.seed))
    identity = identity_placement()
    chaos.receiver = Receiver(dsn, work / "receiver.log")
    chaos.receiver.start()
    receiver = chaos.receiver
    chaos.proxy = CutProxy(lambda: receiver.port)
    chaos.proxy.start()
    # the gateway's own ingest defaults: the bench measures what a deployment gets
    chaos.gateway = ChaosGateway(work, args.nodes, gateway_id=chaos.gateway_id, extra_config="\n".join([
        "", "[upstream]", f'url = "http://127.0.0.1:{chaos.proxy.port}"', f'token = "{TOKEN}"', "interval_s = 0.2",
        "telemetry_batch = 500", ""]))
    nodes: list[Node] = []
    chaos.pg = await asyncpg.connect(dsn)
    try:
        await asyncio.to_thread(chaos.gateway.start)
        nodes = [Node(n, chaos.gateway.mqtt_port, identity) for n in bench_nodes(args.nodes)]
        for node in nodes:
            node.start()
        await asyncio.to_thread(chaos.gateway.wait_registered, args.nodes)
        chaos.publisher = Publisher(nodes, args.rate, args.max_pending)
        chaos.plan()
        chaos.t0 = time.monotonic()
        chaos.publisher.start()
        for n in range(1, args.kills + 1):
            await chaos.kill_once(n)
            if not args.quiet and (n % 10 == 0 or n == args.kills):
                r = chaos.rows[-1]
                print(f"kill {n}/{args.kills}: {r.acked:,} acked, {r.upstream:,} upstream", file=sys.stderr)
        run_s = time.monotonic() - chaos.t0
        drain = await chaos.drain()
        counts = await chaos.count()
    finally:
        if chaos.publisher is not None:
            chaos.publisher.stop()
        for node in nodes:
            node.stop()
        chaos.gateway.stop()
        chaos.proxy.stop()
        chaos.receiver.stop()
        await chaos.pg.close()
    outages = [{"kind": o.kind, "seconds": round(o.seconds, 1) if o.seconds is not None else None, "backlog": o.backlog,
                "catch_up_s": round(o.catch_up_s, 2) if o.catch_up_s is not None else None,
                "rows_per_s": round(o.rate) if o.rate else None} for o in chaos.outages]
    restart = sorted(r.restart_s for r in chaos.rows)
    return {
        "gateway_id": chaos.gateway_id, "identity": identity, "nodes": args.nodes, "rate": args.rate,
        "kills": len(chaos.rows), "receiver_kills": sum("rx" in r.faults for r in chaos.rows),
        "cuts": sum("cut" in r.faults for r in chaos.rows), "restores": [round(a, 1) for a in chaos.restores],
        "run_s": round(run_s, 1), "held_back": chaos.publisher.held_back if chaos.publisher else 0,
        "restart_s": {"p50": restart[len(restart) // 2], "max": restart[-1]} if restart else None,
        **counts, **drain, "outages": outages, "per_kill": [asdict(r) for r in chaos.rows],
        "gateway_log": str(chaos.gateway.log_path), "gateway_log_problems": log_problems(chaos.gateway.log_path),
    }


def log_problems(path: Path) -> dict[str, int]:
    """Counts of what should never be in the gateway's log, over all its incarnations."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return {"tracebacks": text.count("Traceback (most recent call last)"),
            "loop_errors": text.count("exception was never retrieved") + text.count("Task was destroyed"),
            "error_lines": sum(1 for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line)}


def render(f: dict[str, Any]) -> str:
    """The human-readable report."""
    restores = f["restores"]
    ages = f" (copies {', '.join(f'{a} s' for a in restores)} old)" if restores else ""
    lines = [
        f"chaos: {f['kills']} gateway kills, receiver killed {f['receiver_kills']}x, upstream cut {f['cuts']}x,"
        f" older copy restored {len(restores)}x{ages}, in {f['run_s']} s; {f['nodes']} nodes,"
        f" {f['rate']:.0f} samples/s, QoS 1, message identity: {f['identity'] or 'not in the schema'}",
        f"samples: {f['published']:,} published, {f['acked']:,} PUBACKed, {f['unacked_at_end']} never PUBACKed",
        f"LOST (PUBACKed, not in PostgreSQL): {f['lost']}   DUPLICATED (stored more than once): {f['duplicated']}"
        f" ({f['duplicate_rows']} extra rows)   stored but never PUBACKed: {f['stored_not_acked']}",
    ]
    if restores:
        lines.append(f"  of the lost: {f['lost_acked_after_the_restored_copy']} were PUBACKed after an older copy was"
                     " taken and before it replaced the database (never in the copy; recoverable only if uploaded"
                     f" first); {f['lost'] - f['lost_acked_after_the_restored_copy']} others")
    if f["lost_examples"] or f["duplicated_examples"]:
        lines.append(f"  e.g. lost {f['lost_examples']} duplicated {f['duplicated_examples']}"
                     " (number = node index * 1e9 + per-node counter)")
    rates = sorted(o["rows_per_s"] for o in f["outages"] if o["rows_per_s"])
    after = f"{rates[0]:,}-{rates[-1]:,} rows/s, median {rates[len(rates) // 2]:,}" if rates else "-"
    c = f["catch_up"]
    if c:
        lines.append(f"catch-up after a {c['final_cut_s']:.0f} s upstream cut (no kills, nodes publishing):"
                     f" {c['backlog']:,} rows upstream {c['caught_up_s']} s after the link came back (first batch after"
                     f" {c['resumed_s']} s, then {c['rows_per_s'] or '-'} rows/s)")
    lines.append(f"final drain {f['drain_rows']:,} rows in {f['drain_s']} s; catch-up after the"
                 f" {len(f['outages'])} outages during the kills (gateway killed meanwhile): {after}")
    if f["restart_s"]:
        lines.append(f"restart (SIGKILL -> listening): p50 {f['restart_s']['p50']} s, max {f['restart_s']['max']} s;"
                     f" publisher held back {f['held_back']} slots (a node at its pending limit)")
    lines.append("gateway log over all incarnations: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                                  for k, v in f["gateway_log_problems"].items()))
    lines.append("")
    lines.append("per kill: acked/pending = at the nodes when the gateway died; local = its max(id) after the kill;"
                 " lost/dup = of the samples PUBACKed since the previous kill")
    lines.append("  kill      t  faults          acked  pending    local  upstream  restart_s  lost  dup")
    for r in f["per_kill"]:
        local = "-" if r["local"] is None else f"{r['local']:,}"
        lines.append(f"  {r['n']:>4} {r['t']:>6} {r['faults']:<14} {r['acked']:>7,} {r['pending']:>8,} {local:>8}"
                     f" {r['upstream']:>9,} {r['restart_s']:>10} {r['lost']:>5} {r['duplicated']:>4}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the report (and JSON with --json-out); exit 1 if anything was lost or duplicated."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=200, help="gateway SIGKILLs (default 200)")
    p.add_argument("--nodes", type=int, default=5, help="paho MQTT nodes")
    p.add_argument("--rate", type=float, default=200.0, help="samples/s over all nodes (one sample per message)")
    p.add_argument("--max-pending", type=int, default=500, help="unacknowledged messages a node may hold")
    p.add_argument("--receiver-kill-prob", type=float, default=0.1, help="chance per kill to SIGKILL the receiver")
    p.add_argument("--cut-prob", type=float, default=0.1, help="chance per kill to cut the upstream link")
    p.add_argument("--cut-max-s", type=float, default=6.0, help="longest upstream cut")
    p.add_argument("--final-cut-s", type=float, default=10.0,
                   help="after the kills: cut upstream this long, then time the catch-up (0: skip)")
    p.add_argument("--restore-older-copy", action="store_true",
                   help="now and then replace gateway.db by a copy taken a few seconds earlier (issue 20)")
    p.add_argument("--restore-every", type=int, default=25, help="kills between two restores")
    p.add_argument("--seed", type=int, default=None, help="random seed for the fault schedule")
    p.add_argument("--dsn", default=None, help="use this PostgreSQL instead of a throwaway cluster")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and databases here")
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    if args.restore_every < 4:
        p.error("--restore-every must be at least 4 (the copy is taken three kills before it is restored)")
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="chaos-", dir=args.workdir))
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        dsn = args.dsn or stack.enter_context(PostgresCluster()).dsn
        try:
            figures = asyncio.run(run(args, dsn, work))
        except BenchError as exc:
            print(f"chaos run failed: {exc}", file=sys.stderr)
            log = work / "gateway" / "gateway.log"
            if log.exists():
                print("\n".join(log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
            return 2
    print(render(figures))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=1))
    return 0 if figures["lost"] == 0 and figures["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
