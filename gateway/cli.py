"""Command line: ``hydro-gateway run|demo|check-config|provision``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.settings import Settings, SettingsError, load_settings, settings_from_mapping

log = logging.getLogger("gateway")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "gateway.data_dir": str(args.data_dir) if args.data_dir else None,
        "broker.port": args.mqtt_port,
        "web.port": args.http_port,
    }


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="directory for gateway.db (overrides the config)")
    p.add_argument("--mqtt-port", type=int, help="MQTT listener port (overrides the config)")
    p.add_argument("--http-port", type=int, help="web/API port (overrides the config)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="hydro-gateway", description="Greenhouse edge gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the production service")
    run.add_argument("--config", type=Path, required=True, help="path to gateway.toml")
    _add_runtime_flags(run)
    run.set_defaults(func=_cmd_run)
    demo = sub.add_parser("demo", help="run a simulated greenhouse on fake hardware (web on 127.0.0.1:8080)")
    _add_runtime_flags(demo)
    demo.set_defaults(func=_cmd_demo)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("path", type=Path)
    check.set_defaults(func=_cmd_check)
    try:
        from gateway.provision.cli import add_subparser
    except ImportError:  # provisioning tools are optional on a minimal install
        pass
    else:
        add_subparser(sub)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.path)
    except SettingsError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    print(
        f"{args.path}: OK (gateway {settings.gateway.id}, {len(settings.zones)} zones, "
        f"{len(settings.nodes)} nodes, mode {settings.gateway.mode.value})"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, _overrides(args))
    except SettingsError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    return _serve(settings)


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.settings import apply_overrides
    from gateway.sim.demo import demo_config

    data = demo_config(data_dir=args.data_dir or Path("data/demo"))
    settings = settings_from_mapping(apply_overrides(data, _overrides(args)), "<demo>")
    print(
        f"demo: status page http://127.0.0.1:{settings.web.port}  MQTT 127.0.0.1:{settings.broker.port}  "
        f"admin token: {settings.web.admin_token}",
        file=sys.stderr,
    )
    return _serve(settings, simulate=True)


def _serve(settings: Settings, simulate: bool = False) -> int:
    from gateway.malloc_tuning import limit_malloc_arenas

    _setup_logging(settings.gateway.log_level)
    limit_malloc_arenas()  # before the event loop starts any thread
    try:
        asyncio.run(_main(settings, simulate))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # ServiceCrashed, hardware missing, …: systemd restarts us
        log.critical("gateway failed: %r", exc)
        return 1
    return 0


async def _main(settings: Settings, simulate: bool) -> None:
    from gateway.compose import build_gateway

    gateway = await build_gateway(settings, simulate=simulate)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await gateway.run()
    except asyncio.CancelledError:
        log.info("stopped by signal")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hydro-gateway`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
