"""``python -m sync.receiver --dsn ... --port ... --token ...``: run the reference receiver."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from sync.receiver.admission import AdmissionLimits
from sync.receiver.app import make_app
from sync.receiver.faults import Faults


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (fault switches can also be changed later via PUT /admin/faults)."""
    p = argparse.ArgumentParser(prog="python -m sync.receiver", description=__doc__)
    p.add_argument("--dsn", required=True, help="PostgreSQL DSN")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed on stdout)")
    p.add_argument("--token", required=True, help="bearer token gateways must send")
    p.add_argument("--admin-token", default=None, help="bearer token for /admin (default: --token)")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--slow-ms", type=int, default=0)
    p.add_argument("--slow-jitter-ms", type=int, default=0)
    p.add_argument("--reset-rate", type=float, default=0.0)
    p.add_argument("--drop-after-commit-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-batches", type=int, default=16, help="concurrent batches in this process (then 429)")
    p.add_argument("--max-batches-per-gateway", type=int, default=2)
    p.add_argument("--target-batch-s", type=float, default=1.0, help="slower batches shrink X-Max-Batch-Rows")
    p.add_argument("--pool-size", type=int, default=8, help="PostgreSQL connections of this process")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT."""
    faults = Faults()
    faults.update({
        "fail_rate": args.fail_rate, "fail_status": args.fail_status, "slow_ms": args.slow_ms,
        "slow_jitter_ms": args.slow_jitter_ms, "reset_rate": args.reset_rate,
        "drop_after_commit_rate": args.drop_after_commit_rate, "seed": args.seed,
    })
    limits = AdmissionLimits(max_batches=args.max_batches, max_batches_per_gateway=args.max_batches_per_gateway,
                             target_batch_s=args.target_batch_s)
    app = make_app(args.dsn, args.token, admin_token=args.admin_token, faults=faults, limits=limits,
                   pool_size=args.pool_size)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
