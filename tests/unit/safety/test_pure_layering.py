"""The safety and water logic stays pure: no I/O, no event loop, no drivers, no clock of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PURE_MODULES = [
    "gateway/safety/rules.py",
    "gateway/safety/interlock.py",
    "gateway/water/config.py",
    "gateway/water/cycle.py",
    "gateway/water/recirc.py",
    "gateway/water/usage.py",
    "gateway/sim/tank.py",
]
FORBIDDEN_IMPORTS = {
    "asyncio", "aiohttp", "amqtt", "aiosqlite", "sqlite3", "drivers", "gpiozero", "smbus2", "serial",
    "serial_asyncio", "time", "threading", "os", "socket", "subprocess", "logging", "gateway.clock",
}  # fmt: skip
FORBIDDEN_CALLS = {"now", "today", "utcnow", "monotonic"}  # time comes in as arguments (and `time` is not importable)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_nothing_impure(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {name for name in imported if name in FORBIDDEN_IMPORTS or name.split(".")[0] in FORBIDDEN_IMPORTS}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_never_reads_a_clock(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FORBIDDEN_CALLS
    }
    assert not calls, f"{module} calls {sorted(calls)}"
