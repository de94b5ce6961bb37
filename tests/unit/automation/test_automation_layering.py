"""The pure automation modules stay pure: no event loop, database, network or hardware imports."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.automation

PURE = ("recipes.py", "schedule_plan.py", "dosing.py", "config.py")
FORBIDDEN = ("asyncio", "aiosqlite", "aiohttp", "amqtt", "drivers", "gateway.store", "gateway.commands")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_modules_import_no_io() -> None:
    pkg = Path(gateway.automation.__file__).parent
    for name in PURE:
        bad = {i for i in _imports(pkg / name) if any(i == f or i.startswith(f + ".") for f in FORBIDDEN)}
        assert not bad, f"{name} imports {sorted(bad)}"
