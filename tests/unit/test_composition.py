"""The composition root is the only place that knows the whole gateway; everything else gets what it uses."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
from pathlib import Path

import pytest

from gateway.compose import build_services
from gateway.settings import settings_from_mapping
from gateway.sim.demo import demo_config

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "drivers", "sync", "firmware_contracts")
ENTRY_POINTS = {"gateway.compose", "gateway.cli", "gateway.__main__"}
WHOLE_GATEWAY = {"gateway.app", "gateway.compose", "gateway.services"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


def _graph() -> dict[str, set[str]]:
    """module → the package modules it imports, TYPE_CHECKING blocks and function-local imports included."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_the_walk_sees_the_composition_root() -> None:
    """Guard against a vacuous pass: the root really imports the supervisor and the services."""
    graph = _graph()
    assert {"gateway.app", "gateway.services", "gateway.web.server"} <= graph["gateway.compose"]
    assert "gateway.compose" in graph["gateway.cli"]


def test_gateway_app_is_imported_only_by_the_entry_points() -> None:
    importers = {name for name, deps in _graph().items() if "gateway.app" in deps}
    assert importers <= ENTRY_POINTS, sorted(importers - ENTRY_POINTS)


def test_web_sim_and_upstream_never_see_the_whole_gateway() -> None:
    offenders = sorted(
        f"{name} imports {sorted(deps & WHOLE_GATEWAY)}"
        for name, deps in _graph().items()
        if name.startswith(("gateway.web", "gateway.sim", "gateway.upstream")) and deps & WHOLE_GATEWAY
    )
    assert offenders == []


def test_the_import_graph_has_no_cycles() -> None:
    """Not even through TYPE_CHECKING: a cycle there is a dependency the code hides from its reader."""
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


async def test_services_are_built_once_wired_to_one_gate_and_frozen(tmp_path: Path) -> None:
    settings = settings_from_mapping(demo_config(tmp_path, http_port=0, mqtt_port=0))
    services = await build_services(settings)
    try:
        assert services.safety.gate is services.gate  # one door to every pump
        assert services.registry.zone_id("zone-a") is not None  # the config is applied before anything runs
        assert services.gate.channel_by_role(services.registry.zone_id("zone-a") or 0, "recirc") is not None
        assert services.simulation is None and services.web.services.sync is services.sync
        with pytest.raises(dataclasses.FrozenInstanceError):
            services.gate = None  # type: ignore[misc]
    finally:
        await asyncio.to_thread(services.hardware.close)
        await services.db.close()
