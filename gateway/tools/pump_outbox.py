"""Run only the uplink against a gateway SQLite file (chaos tests and the catch-up benchmark).

``python -m gateway.tools.pump_outbox --db X --url http://127.0.0.1:8080 --token T --gateway-id gw1 --until-idle``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from gateway.store.db import Database
from sync.client import UpstreamClient
from sync.uplink import Uplink, UplinkSettings, UplinkStatus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m gateway.tools.pump_outbox", description=__doc__)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--gateway-id", required=True)
    p.add_argument("--ca-file", type=Path, default=None)
    p.add_argument("--telemetry-max-rows", type=int, default=2000)
    p.add_argument("--max-rows", type=int, default=500)
    p.add_argument("--max-bytes", type=int, default=2_000_000)
    p.add_argument("--backoff-base", type=float, default=1.0)
    p.add_argument("--backoff-cap", type=float, default=300.0)
    p.add_argument("--idle-poll", type=float, default=5.0)
    p.add_argument("--until-idle", action="store_true", help="exit 0 once every stream is caught up")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def pump(args: argparse.Namespace) -> UplinkStatus:
    """Open the database and the client, run the uplink; returns the final status."""
    settings = UplinkSettings(
        telemetry_max_rows=args.telemetry_max_rows, max_rows=args.max_rows, max_bytes=args.max_bytes,
        backoff_base_s=args.backoff_base, backoff_cap_s=args.backoff_cap, idle_poll_s=args.idle_poll,
    )
    db = Database(args.db)
    await db.open()
    try:
        async with UpstreamClient(args.url, args.token, args.gateway_id, ca_file=args.ca_file) as client:
            uplink = Uplink(db, client, settings)
            await uplink.run(until_idle=args.until_idle)
            return uplink.status()
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the final status as JSON when ``--until-idle`` finishes."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    status = asyncio.run(pump(args))
    print(json.dumps(status), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
