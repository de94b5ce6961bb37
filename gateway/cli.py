"""Command line: ``hydro-gateway run|demo|check-config|provision``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import signal
import sys
import tomllib
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
    parser.add_argument("--version", action="version", version=f"hydro-gateway {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the production service")
    run.add_argument("--config", type=Path, required=True, help="path to gateway.toml")
    _add_runtime_flags(run)
    run.set_defaults(func=_cmd_run)
    demo = sub.add_parser("demo", help="run a simulated greenhouse on fake hardware (web on 127.0.0.1:8080)")
    _add_runtime_flags(demo)
    demo.set_defaults(func=_cmd_demo)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("path", type=Path, nargs="?", help="config file (default with --example: gateway.example.toml)")
    check.add_argument(
        "--example",
        action="store_true",
        help="check a sample config on a machine without its secret files: missing ones become placeholders",
    )
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


def package_version() -> str:
    """The installed package's version (the source tree's pyproject when not installed)."""
    try:
        return importlib.metadata.version("hydro-gateway")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


# Secret files a sample config names; with --example a missing one becomes an inline placeholder.
EXAMPLE_SECRETS = (
    ("web", "admin_token_file", "admin_token", "example-admin-token"),
    ("upstream", "token_file", "token", "example-upstream-token"),
    ("broker", "password_file", None, None),
)


def _cmd_check(args: argparse.Namespace) -> int:
    path: Path | None = args.path or (Path("gateway.example.toml") if args.example else None)
    if path is None:
        print("check-config: give a config file (or --example for the shipped gateway.example.toml)", file=sys.stderr)
        return 2
    try:
        if args.example:
            settings, replaced = _load_example(path)
        else:
            settings, replaced = load_settings(path), []
    except SettingsError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        if not args.example and any("cannot read /etc/" in line for line in exc.problems):
            print("hint: to check a sample config on a machine without its secret files, use --example",
                  file=sys.stderr)
        return 2
    for key, missing in replaced:
        print(f"--example: {key} {missing} does not exist here; checked with a placeholder", file=sys.stderr)
    print(
        f"{path}: OK (gateway {settings.gateway.id}, {len(settings.zones)} zones, "
        f"{len(settings.nodes)} nodes, mode {settings.gateway.mode.value})"
    )
    return 0


def _load_example(path: Path) -> tuple[Settings, list[tuple[str, str]]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError([f"<file>: cannot read {path}: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"<toml>: {exc} ({path})"]) from exc
    replaced = []
    for section, file_key, inline_key, placeholder in EXAMPLE_SECRETS:
        table = data.get(section)
        if not isinstance(table, dict) or not isinstance(table.get(file_key), str):
            continue
        if not Path(table[file_key]).exists():
            missing = table.pop(file_key)
            if inline_key is not None:
                table[inline_key] = placeholder
            replaced.append((f"{section}.{file_key}", missing))
    return settings_from_mapping(data, str(path)), replaced


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

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        # Building opens the database and the hardware (released again if a signal interrupts it).
        gateway = await build_gateway(settings, simulate=simulate)
        await gateway.run()
    except asyncio.CancelledError:
        log.info("stopped by signal")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hydro-gateway`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
