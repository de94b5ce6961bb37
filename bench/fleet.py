"""Fleet benchmark: N gateways come back from an outage at the same moment, each with a backlog.

    python bench/fleet.py                       # 200 gateways x 1 h of 50 nodes at 1 sample / 10 s
    python bench/fleet.py --gateways 1000 --hours 0.25
    python bench/fleet.py --hours 24            # the full "24 h backlog" (86 M samples at 200 gateways)

Each gateway is a real ``sync.uplink.Uplink`` (telemetry stream) over its own SQLite outbox, pre-filled
with ``--hours`` of ``--nodes`` nodes at one sample per ``--interval`` s (one file is seeded, then copied).
Uplinks run in ``--uplink-procs`` worker processes (asyncio, many uplinks per process). All are released
at the same moment against ``--receivers`` reference receiver processes (``python -m sync.receiver``)
sharing one PostgreSQL; gateway i talks to receiver i mod R. ``--drop-rate`` makes the receivers lose
that share of responses after the commit; the gateway's client then reconnects to the *next* receiver
(as a load balancer would route a new connection), so the retried batch lands on another process.

Printed: drain time, central samples/s over time, p50/p99 batch latency, the share of 429/503 answers
and how Retry-After + jitter spread the retries, fairness (slowest vs median gateway), duplicates stored
(must be 0) and PostgreSQL bytes per million samples.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run as files; the PostgreSQL helper lives in tests/fakes

from common import cpu_s, postgres_cpu_s

TOKEN = "fleet-token"


# ---------------------------------------------------------------- worker: many uplinks in one process


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    """Open every gateway of this worker, wait for "go", drain them all, return what was observed."""
    from gateway.store.db import Database
    from sync.client import BatchResult, Outcome, UpstreamClient
    from sync.streams import ALL_STREAMS, TELEMETRY
    from sync.uplink import Uplink, UplinkSettings

    urls: list[str] = args.urls.split(",")
    requests: list[tuple[int, float, float, int, int, str | None, int]] = []  # gw, t0, latency, status, rows...
    counts: Counter[str] = Counter()

    class RecordingClient(UpstreamClient):
        """The real client; records every batch POST, and reconnects elsewhere when a response is lost."""

        def __init__(self, index: int) -> None:
            self.index = index
            self.receiver = index % len(urls)
            self.rerouted = False
            super().__init__(urls[self.receiver], TOKEN, f"gw-{index:05d}", timeout_s=120)

        async def post_batch(self, stream: str, gzip_body: bytes, key: str) -> BatchResult:
            first, last = (int(x) for x in key.rsplit(":", 1)[1].split("-"))
            t0 = time.time()
            result = await super().post_batch(stream, gzip_body, key)
            took = time.time() - t0
            status = result.status or 0
            requests.append((self.index, t0, took, status, last - first + 1, result.retry_after, self.receiver))
            if result.status is None:  # connection lost (the response after the commit): go elsewhere
                counts["lost_responses"] += 1
                self.receiver = (self.receiver + 1) % len(urls)
                self.base_url = urls[self.receiver]
                self.rerouted = True
            elif self.rerouted and result.outcome in (Outcome.STORED, Outcome.DUPLICATE):
                counts["retried_on_other_receiver"] += 1
                counts["answered_duplicate_there"] += int(result.outcome is Outcome.DUPLICATE)
                self.rerouted = False
            return result

    spec = [s for s in ALL_STREAMS if s.name == TELEMETRY]
    settings = UplinkSettings(telemetry_max_rows=args.rows)
    indexes = list(range(args.first, args.first + args.count))
    dbs: list[Database] = []
    clients: list[RecordingClient] = []
    for i in indexes:
        db = Database(Path(args.work) / f"gw-{i:05d}.sqlite")
        await db.open()
        dbs.append(db)
        client = RecordingClient(i)
        await client.start()
        clients.append(client)
    uplinks = [Uplink(db, c, settings, streams=spec) for db, c in zip(dbs, clients, strict=True)]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    go, cpu0 = time.time(), time.process_time()
    done: dict[int, float] = {}

    async def drain(i: int, up: Uplink) -> None:
        await up.run(until_idle=True)
        done[i] = time.time() - go

    try:
        async with asyncio.TaskGroup() as tg:
            for i, up in zip(indexes, uplinks, strict=True):
                tg.create_task(drain(i, up))
    finally:
        for c in clients:
            await c.close()
        for db in dbs:
            await db.close()
    return {"go": go, "done": done, "requests": requests, "counts": dict(counts),
            "cpu_s": time.process_time() - cpu0}


# ---------------------------------------------------------------- coordinator


def seed_template(path: Path, args: argparse.Namespace, now: float) -> int:
    """One gateway's backlog: --hours of --nodes nodes at one sample per --interval s, ending now."""
    from gateway.tools.seed_db import add_samples, migrate

    asyncio.run(migrate(path))
    n = int(args.hours * 3600 / args.interval * args.nodes)
    zones = 5 if args.nodes % 5 == 0 else 1
    add_samples(path, n, start_ts=now - args.hours * 3600, step_s=args.interval / args.nodes, zones=zones,
                nodes_per_zone=args.nodes // zones)
    return n


def start_receiver(dsn: str, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """``python -m sync.receiver`` on a free port; returns (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync.receiver", "--dsn", dsn, "--port", "0", "--token", TOKEN,
         "--drop-after-commit-rate", str(args.drop_rate), "--max-batches", str(args.max_batches),
         "--max-batches-per-gateway", str(args.per_gateway), "--pool-size", str(args.pool_size),
         "--target-batch-s", str(args.target_batch_s), "--fail-rate", str(args.fail_rate)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        raise SystemExit(f"receiver did not start: {line!r}")
    return proc, "http://" + line.split()[-1]


def receiver_stats(url: str) -> dict[str, Any]:
    """/admin/stats of one receiver."""
    req = urllib.request.Request(url + "/admin/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc: dict[str, Any] = json.load(resp)
        return doc


class Sampler(threading.Thread):
    """Sums the receivers' stored-row and 429 counters once a second."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.samples: list[tuple[float, int, int]] = []  # (wall time, rows inserted, 429s)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rows = refused = 0
            for url in self.urls:
                try:
                    s = receiver_stats(url)
                except OSError:
                    continue
                rows += int(s.get("rows_inserted", 0))
                refused += int(s.get("status_429", 0))
            self.samples.append((time.time(), rows, refused))
            self.stop.wait(1.0)


def pct(values: list[float], q: float) -> float:
    """q-quantile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def analyse(results: list[dict[str, Any]], sampler: Sampler, db: dict[str, Any], args: argparse.Namespace,
            per_gateway: int, cpu: dict[str, float]) -> list[str]:
    """Turn the workers' records and the database checks into the printed report."""
    go = min(r["go"] for r in results)
    done = {int(k): v + r["go"] - go for r in results for k, v in r["done"].items()}
    reqs = [q for r in results for q in r["requests"]]
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])
    drain = max(done.values())
    ok = [q for q in reqs if 200 <= q[3] < 300]
    lat = [q[2] * 1000 for q in ok]
    by_status = Counter(q[3] for q in reqs)
    total = int(args.gateways * per_gateway)
    out = [
        f"fleet: {args.gateways} gateways x {per_gateway:,} samples ({args.hours:g} h of {args.nodes} nodes at "
        f"1/{args.interval:g} s) = {total:,} samples; {args.receivers} receiver processes "
        f"(max {args.max_batches} batches each, {args.per_gateway} per gateway, pool {args.pool_size}), "
        f"{args.uplink_procs} uplink processes, batches <= {args.rows} rows, drop-after-commit {args.drop_rate:g}",
        f"drain time: {drain:.1f} s (all {len(done)} gateways idle); mean {total / drain:,.0f} samples/s",
    ]
    rates = []
    s = sampler.samples
    for (t0, r0, _), (t1, r1, _) in itertools.pairwise(s):
        if t1 > go and t1 - t0 > 0:
            rates.append((t1 - go, (r1 - r0) / (t1 - t0)))
    if rates:
        peak = max(rates, key=lambda x: x[1])
        step = max(1, len(rates) // 12)
        timeline = ", ".join(f"{t:.0f}s:{v / 1000:.1f}k" for t, v in rates[::step])
        out.append(f"central samples/s: peak {peak[1]:,.0f} at {peak[0]:.0f} s; over time: {timeline}")
    out.append(f"batch latency (2xx, {len(ok):,} batches): p50 {pct(lat, 0.5):.0f} ms, p99 {pct(lat, 0.99):.0f} ms,"
               f" max {max(lat):.0f} ms; mean batch {sum(q[4] for q in ok) / len(ok):.0f} rows")
    n = len(reqs)
    share = ", ".join(f"{k or 'no answer'}: {v} ({100 * v / n:.1f} %)" for k, v in sorted(by_status.items()))
    out.append(f"answers ({n:,} POSTs): {share}")
    # How long each refused gateway actually waited before its next attempt (Retry-After + jitter).
    per_gw: dict[int, list[tuple[float, float, int]]] = {}
    for q in sorted(reqs, key=lambda q: q[1]):
        per_gw.setdefault(q[0], []).append((q[1], q[1] + q[2], q[3]))
    waits = [nxt[0] - cur[1] for seq in per_gw.values() for cur, nxt in itertools.pairwise(seq)
             if cur[2] in (429, 503)]
    if waits:
        hints = Counter(q[5] for q in reqs if q[3] in (429, 503))
        out.append(f"retry after 429/503: Retry-After sent {dict(sorted(hints.items()))}; "
                   f"waited p5 {pct(waits, .05):.2f} / p50 {pct(waits, .5):.2f} / p95 {pct(waits, .95):.2f}"
                   f" / max {max(waits):.2f} s")
    starts = Counter(int(q[1] - go) for q in reqs)
    if starts:
        busiest = max(starts.values())
        first = min(q[1] for q in reqs) - go  # the gateways share these cores: reading the first batches takes time
        out.append(f"herd: first POST {first:.1f} s after the release (every gateway reads and gzips its first "
                   f"batch); POSTs started per second: busiest {busiest}, "
                   f"median {statistics.median(starts.values()):.0f}")
        refused = Counter(int(q[1] - go) for q in reqs if q[3] == 429)
        step = max(1, int(drain) // 12)
        out.append("429s per second over time: " + ", ".join(
            f"{t}s:{refused.get(t, 0)}" for t in range(0, int(drain) + 1, step)))
    times = sorted(done.values())
    median = statistics.median(times)
    out.append(f"fairness: gateway drain time min {times[0]:.1f} / median {median:.1f} / p95 {pct(times, .95):.1f} /"
               f" max {times[-1]:.1f} s; slowest / median = {times[-1] / median:.2f}")
    out.append(f"forced retries: {counts['lost_responses']} responses lost after commit, "
               f"{counts['retried_on_other_receiver']} batches then stored via another receiver process "
               f"({counts['answered_duplicate_there']} answered as duplicates there)")
    out.append("CPU seconds during the run: " + ", ".join(f"{k} {v:.0f} s ({v / drain:.2f} cores, "
                                                           f"{v / total * 1e6:.0f} us/sample)" for k, v in cpu.items()))
    out.append(f"stored: {db['rows']:,} rows, {db['distinct']:,} distinct (gateway, generation, seq): "
               f"duplicates stored = {db['rows'] - db['distinct']}; missing = {total - db['distinct']}")
    out.append(f"PostgreSQL: telemetry {db['telemetry_bytes'] / 2**20:.0f} MiB in {db['partitions']} partitions "
               f"+ seq ranges {db['ranges_bytes'] / 2**20:.1f} MiB"
               f" + idempotency keys {db['keys_bytes'] / 2**20:.1f} MiB"
               f" = {db['per_million'] / 2**20:.0f} MiB per million samples")
    return out


def check_database(dsn: str) -> dict[str, Any]:
    """Row counts, duplicates and sizes, straight from PostgreSQL."""
    import asyncpg

    async def go() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM telemetry_samples")
            distinct = await conn.fetchval(
                "SELECT count(*) FROM (SELECT DISTINCT gateway_id, generation, seq FROM telemetry_samples) d")
            tel = await conn.fetchval(
                "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('telemetry_samples')")
            parts = await conn.fetchval(
                "SELECT count(*) FROM pg_partition_tree('telemetry_samples') WHERE isleaf")
            ranges = await conn.fetchval("SELECT pg_total_relation_size('telemetry_seq_ranges')")
            keys = await conn.fetchval("SELECT pg_total_relation_size('idempotency_keys')")
        finally:
            await conn.close()
        total = int(tel) + int(ranges) + int(keys)
        return {"rows": rows, "distinct": distinct, "telemetry_bytes": int(tel), "partitions": parts,
                "ranges_bytes": int(ranges), "keys_bytes": int(keys),
                "per_million": total / max(1, rows) * 1_000_000}

    return asyncio.run(go())


def run(args: argparse.Namespace, dsn: str, work: Path, pg_data: Path | None = None) -> list[str]:
    """Seed, start receivers and workers, release, sample, check."""
    t0 = time.monotonic()
    template = work / "template.sqlite"
    per_gateway = seed_template(template, args, time.time())
    for i in range(args.gateways):
        shutil.copyfile(template, work / f"gw-{i:05d}.sqlite")
    print(f"seeded {args.gateways} x {per_gateway:,} samples in {time.monotonic() - t0:.1f} s", flush=True)
    receivers = [start_receiver(dsn, args) for _ in range(args.receivers)]
    urls = [u for _, u in receivers]
    workers: list[subprocess.Popen[str]] = []
    try:
        share = -(-args.gateways // args.uplink_procs)
        for first in range(0, args.gateways, share):
            workers.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", "--first", str(first),
                 "--count", str(min(share, args.gateways - first)), "--work", str(work), "--urls", ",".join(urls),
                 "--rows", str(args.rows)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for w in workers:
            assert w.stdout is not None
            if w.stdout.readline().strip() != "ready":
                raise SystemExit("an uplink worker failed to start")
        sampler = Sampler(urls)
        sampler.start()
        rx_cpu0, pg_cpu0 = sum(cpu_s(p.pid) for p, _ in receivers), postgres_cpu_s(pg_data)
        for w in workers:  # released together
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        results = []
        for w in workers:
            out, _ = w.communicate()
            if w.returncode != 0:
                raise SystemExit(f"an uplink worker failed ({w.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        cpu = {"receivers": sum(cpu_s(p.pid) for p, _ in receivers) - rx_cpu0,
               "postgres": postgres_cpu_s(pg_data) - pg_cpu0,
               "uplinks": sum(r["cpu_s"] for r in results)}
        time.sleep(1.2)
        sampler.stop.set()
        sampler.join()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        for proc, _ in receivers:
            proc.terminate()
            proc.wait(timeout=30)
    return analyse(results, sampler, check_database(dsn), args, per_gateway, cpu)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateways", type=int, default=200)
    p.add_argument("--hours", type=float, default=1.0, help="backlog per gateway (24 = the full outage)")
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples of one node")
    p.add_argument("--receivers", type=int, default=3)
    p.add_argument("--uplink-procs", type=int, default=2)
    p.add_argument("--rows", type=int, default=2000, help="the uplinks' telemetry batch size")
    p.add_argument("--max-batches", type=int, default=16, help="per receiver process")
    p.add_argument("--per-gateway", type=int, default=2)
    p.add_argument("--pool-size", type=int, default=8)
    p.add_argument("--target-batch-s", type=float, default=1.0)
    p.add_argument("--drop-rate", type=float, default=0.005, help="responses lost after commit (forced retries)")
    p.add_argument("--fail-rate", type=float, default=0.0, help="injected 503 share")
    p.add_argument("--dsn", default=None, help="use this PostgreSQL (default: a throwaway cluster)")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", default="", help=argparse.SUPPRESS)
    p.add_argument("--urls", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args))), flush=True)
        return 0
    from tests.fakes.postgres import PostgresCluster

    with tempfile.TemporaryDirectory(prefix="hydro-fleet-") as tmp:
        if args.dsn:
            lines = run(args, args.dsn, Path(tmp))
        else:
            with PostgresCluster() as pg:
                lines = run(args, pg.dsn, Path(tmp), pg.data)
    print("\n".join(lines))
    print(f"(load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; 2 shared cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
