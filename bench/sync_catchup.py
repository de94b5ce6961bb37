"""Catch-up benchmark: drain a backlog of N samples from a gateway SQLite file into the reference
receiver on PostgreSQL, and watch the gateway side's memory while it does.

    python bench/sync_catchup.py                 # 1,000,000 samples, throwaway PostgreSQL
    python bench/sync_catchup.py --samples 200000 --dsn postgresql://...

Two phases, each against a fresh backlog:

1. **drain alone**: ``python -m gateway.tools.pump_outbox`` (the real Uplink, nothing else) in its own
   process, so its RSS is measured alone;
2. **drain while ingesting**: the whole gateway (``python -m gateway run``) with the same backlog in its
   database and upstream pointed at the receiver, while 50 bench nodes (bench/load_nodes.py, real MQTT
   clients) publish telemetry at ``--ingest-rate`` samples/s: the drain rate, the ingest rate the gateway
   still commits meanwhile, lost samples, and the gateway's RSS (``--no-ingest`` skips this phase).

The receiver is ``python -m sync.receiver`` on PostgreSQL. Targets: >= 50,000 samples/s drained and
gateway RSS <= 100 MB, flat during the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run as files; the PostgreSQL helper lives in tests/fakes

from common import connect_ro, cpu_s, max_id, postgres_cpu_s  # bench/ is on sys.path when run as a file
from ingest import GatewaySystem, Generators

from gateway.tools.seed_db import add_samples, migrate
from tests.fakes.postgres import PostgresCluster

TOKEN = "bench-token"
GATEWAY = "gw-bench"
GATEWAY_2 = "gw-bench-ingesting"
SEEDED_NODES = 6  # seed_db's topology: 2 zones x 3 nodes, validated
TARGET_RATE = 50_000
TARGET_RSS_MB = 100.0


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stored(url: str, *, exact: bool = True, gateway: str = GATEWAY) -> int:
    """Telemetry rows the receiver holds (exact count) or its highest seq (cheap, for progress)."""
    req = urllib.request.Request(f"{url}/admin/gateways/{gateway}/streams/telemetry{'' if exact else '?count=0'}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc = json.load(resp)
    return int(doc["count"] if exact else doc["max_seq"] or 0)


def run(args: argparse.Namespace, dsn: str, work: Path, pg_data: Path | None) -> dict[str, Any]:
    """Seed, start the receiver, drain, sample; returns the figures."""
    db = work / "gateway.sqlite"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "gateway.tools.seed_db", "--db", str(db), "--samples", str(args.samples)],
                   cwd=ROOT, check=True)
    seed_s = time.monotonic() - t0
    receiver, url = start_receiver(dsn)
    try:
        rx_cpu0, pg_cpu0 = cpu_s(receiver.pid), postgres_cpu_s(pg_data)
        started = time.monotonic()
        pump = subprocess.Popen(
            [sys.executable, "-m", "gateway.tools.pump_outbox", "--db", str(db), "--url", url, "--token", TOKEN,
             "--gateway-id", GATEWAY, "--telemetry-max-rows", str(args.rows), "--until-idle"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rss: list[tuple[float, float]] = []
        progress: list[tuple[float, int]] = []
        gw_cpu = 0.0
        next_progress = started + 1.0
        while pump.poll() is None:
            now = time.monotonic()
            sample = rss_mb(pump.pid)
            if sample is not None:
                rss.append((now - started, sample))
                gw_cpu = cpu_s(pump.pid)
            if now >= next_progress:
                progress.append((now - started, stored(url, exact=False)))
                next_progress += 1.0
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        out, err = pump.communicate()
        if pump.returncode != 0:
            raise SystemExit(f"pump_outbox failed:\n{err[-3000:]}")
        rx_cpu, pg_cpu = cpu_s(receiver.pid) - rx_cpu0, postgres_cpu_s(pg_data) - pg_cpu0
        total = stored(url)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    status = json.loads(out)["streams"]["telemetry"]
    steady = [r for t, r in rss if t >= 2.0] or [r for _, r in rss]
    window = [(t, n) for t, n in progress if n < args.samples]
    steady_rate = ((window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
                   if len(window) >= 2 and window[-1][0] > window[0][0] else None)
    return {
        "samples": args.samples,
        "stored_upstream": total,
        "batches": status["batches_sent"],
        "seed_s": round(seed_s, 2),
        "drain_s": round(elapsed, 2),
        "samples_per_s": round(args.samples / elapsed),
        "steady_samples_per_s": round(steady_rate) if steady_rate else None,
        "gateway_rss_mb": {"first": round(rss[0][1], 1) if rss else None, "max": round(max(r for _, r in rss), 1),
                           "steady_min": round(min(steady), 1), "steady_max": round(max(steady), 1),
                           "last": round(rss[-1][1], 1)},
        "gateway_cpu_s": round(gw_cpu, 2),
        "receiver_cpu_s": round(rx_cpu, 2),
        "postgres_cpu_s": round(pg_cpu, 2) if pg_data else None,
        "cpus": os.cpu_count(),
    }


def start_receiver(dsn: str) -> tuple[subprocess.Popen[str], str]:
    """The reference receiver on a free port; (process, base URL)."""
    receiver = subprocess.Popen(
        [sys.executable, "-m", "sync.receiver", "--dsn", dsn, "--port", "0", "--token", TOKEN],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    return receiver, "http://" + receiver.stdout.readline().split()[-1]


def run_with_ingest(args: argparse.Namespace, dsn: str, work: Path) -> dict[str, Any]:
    """Phase 2: the whole gateway drains a 3-day backlog while the bench nodes keep publishing."""
    # Its own gateway id: the receiver already holds phase 1's rows under GATEWAY.
    system = GatewaySystem(work, args.nodes, gateway_id=GATEWAY_2)
    db_path = system.db_path
    db_path.parent.mkdir(parents=True)
    now = time.time()
    asyncio.run(migrate(db_path))
    # A backlog of three days offline, already folded into the local aggregates (the aggregator kept
    # running while the uplink could not).
    add_samples(db_path, args.samples, start_ts=now - 3 * 86_400, step_s=3 * 86_400 / args.samples)
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO aggregator_state(name, last_id, updated_at) VALUES ('telemetry', ?, ?)",
                     (args.samples, now))
    receiver, url = start_receiver(dsn)
    system.extra_config = "\n".join(["", "[upstream]", f'url = "{url}"', f'token = "{TOKEN}"', "interval_s = 1.0",
                                     f"telemetry_batch = {args.rows}", ""])
    gens: Generators | None = None
    try:
        launched = time.monotonic()
        system.start()
        started = time.monotonic()  # the drain is timed from the gateway being up (its web port answers)
        gens = Generators(work, system.mqtt_port, args.nodes, 2, 1000)
        system.wait_registered(args.nodes + SEEDED_NODES)
        conn = connect_ro(db_path)
        seeded_top = args.samples
        rate = args.ingest_rate
        done: list[dict[str, Any]] = []
        publishing = gens

        def publish() -> None:
            done.extend(publishing.step(time.time() + 0.5, rate, args.ingest_seconds, 1, 0))

        load = threading.Thread(target=publish)
        load.start()
        load_t0 = time.monotonic() + 0.5
        rss: list[tuple[float, float]] = []
        drained_at: float | None = None
        committed_at_drain = 0
        pid = system.pids()["gateway"]
        while load.is_alive() or drained_at is None:
            t = time.monotonic()
            sample = rss_mb(pid)
            if sample is not None:
                rss.append((t - started, sample))
            if drained_at is None and stored(url, exact=False, gateway=GATEWAY_2) >= seeded_top:
                drained_at = t
                committed_at_drain = max(0, max_id(conn) - seeded_top)
            if t - started > args.ingest_seconds + 300:
                raise SystemExit("the backlog did not drain within the time limit")
            time.sleep(0.1)
        load.join()
        # Everything the nodes had acknowledged must be committed: wait for the writer's last batch.
        sent = sum(int(d["sent_samples"]) for d in done)
        deadline = time.monotonic() + 10
        while max_id(conn) - seeded_top < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        committed = max_id(conn) - seeded_top
        conn.close()
    finally:
        if gens is not None:
            gens.stop()
        system.stop()
        receiver.terminate()
        receiver.wait(timeout=10)
    assert drained_at is not None
    drain_s = drained_at - started
    ingest_window = max(0.001, drained_at - load_t0)
    return {
        "offered_ingest_samples_per_s": rate,
        "startup_s": round(started - launched, 2),
        "drain_s": round(drain_s, 2),
        "drain_samples_per_s": round(args.samples / drain_s),
        "ingest_samples_per_s_during_drain": round(committed_at_drain / ingest_window),
        "ingest_sent": sent,
        "ingest_committed": committed,
        "ingest_lost": max(0, sent - committed),
        "gateway_rss_mb": {"max": round(max(r for _, r in rss), 1), "first": round(rss[0][1], 1),
                           "last": round(rss[-1][1], 1)},
    }


def main() -> int:
    """Entry point: prints a summary and the figures as JSON; exit 1 if a target was missed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1_000_000)
    p.add_argument("--rows", type=int, default=2000, help="telemetry rows per batch")
    p.add_argument("--dsn", default=None, help="use this PostgreSQL instead of a throwaway cluster")
    p.add_argument("--no-ingest", action="store_true", help="skip phase 2 (drain while ingesting)")
    p.add_argument("--ingest-rate", type=float, default=2000.0, help="phase 2: samples/s the nodes publish")
    p.add_argument("--ingest-seconds", type=float, default=40.0, help="phase 2: how long the nodes publish")
    p.add_argument("--nodes", type=int, default=50, help="phase 2: simulated nodes")
    args = p.parse_args()
    with_ingest: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        if args.dsn:
            figures = run(args, args.dsn, Path(tmp), None)
            if not args.no_ingest:
                with_ingest = run_with_ingest(args, args.dsn, Path(tmp) / "phase2")
        else:
            with PostgresCluster() as pg:
                figures = run(args, pg.dsn, Path(tmp), pg.data)
                if not args.no_ingest:
                    with_ingest = run_with_ingest(args, pg.dsn, Path(tmp) / "phase2")
    rate_ok = figures["samples_per_s"] >= TARGET_RATE
    rss = figures["gateway_rss_mb"]
    rss_ok = rss["max"] <= TARGET_RSS_MB
    flat = rss["steady_max"] - rss["steady_min"] <= 10.0
    exact = figures["stored_upstream"] == figures["samples"]
    print(f"drained {figures['samples']:,} samples in {figures['drain_s']} s: "
          f"{figures['samples_per_s']:,} samples/s (target >= {TARGET_RATE:,}) {'OK' if rate_ok else 'MISSED'}")
    print(f"steady rate {figures['steady_samples_per_s']} samples/s; {figures['batches']} batches")
    print(f"gateway RSS first {rss['first']} MB, max {rss['max']} MB (target <= {TARGET_RSS_MB:.0f}) "
          f"{'OK' if rss_ok else 'MISSED'}; steady {rss['steady_min']}-{rss['steady_max']} MB "
          f"{'flat' if flat else 'NOT FLAT'}")
    print(f"CPU: gateway {figures['gateway_cpu_s']} s, receiver {figures['receiver_cpu_s']} s, "
          f"PostgreSQL {figures['postgres_cpu_s']} s on {figures['cpus']} cores")
    print(f"upstream holds {figures['stored_upstream']:,} rows {'(exact)' if exact else '(MISMATCH)'}")
    ok2 = True
    if with_ingest is not None:
        w = with_ingest
        drain_ok = w["drain_samples_per_s"] >= TARGET_RATE
        kept_up = w["ingest_samples_per_s_during_drain"] >= 0.9 * w["offered_ingest_samples_per_s"]
        rss2_ok = w["gateway_rss_mb"]["max"] <= TARGET_RSS_MB
        ok2 = drain_ok and kept_up and rss2_ok and w["ingest_lost"] == 0
        print(f"while ingesting {w['offered_ingest_samples_per_s']:,.0f} samples/s from {args.nodes} MQTT nodes "
              f"(whole gateway, up in {w['startup_s']} s): drained in {w['drain_s']} s = "
              f"{w['drain_samples_per_s']:,} samples/s "
              f"{'OK' if drain_ok else 'MISSED'}; ingest committed meanwhile "
              f"{w['ingest_samples_per_s_during_drain']:,} samples/s {'(kept up)' if kept_up else '(FELL BEHIND)'}, "
              f"lost {w['ingest_lost']} of {w['ingest_sent']:,}; gateway RSS max {w['gateway_rss_mb']['max']} MB "
              f"{'OK' if rss2_ok else 'MISSED'}")
        figures["with_ingest"] = with_ingest
    print(json.dumps(figures))
    return 0 if rate_ok and rss_ok and flat and exact and ok2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
