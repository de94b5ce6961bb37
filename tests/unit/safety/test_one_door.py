"""One door to every pump, proven over the source: nothing but the gate switches a relay or publishes a command.

An AST walk over every production module (gateway/, sync/): a new call site that switches a relay, builds a
command topic or takes the raw MQTT publisher outside the allowed places fails this test, whatever it does at
run time. drivers/ is the layer below the gate (the relay adapter and the watchdog release coils there).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("gateway", "sync")
GATE = "gateway/safety/gate.py"
# Methods that drive a relay coil (drivers.relay.PumpRelay / gpiozero OutputDevice).
RELAY_WRITES = frozenset({"set_pump", "release"})
# The raw publishers: the broker's and the node transport's. Only the composition root may hand them out.
RAW_PUBLISHERS = frozenset({"broker", "transport", "_transport"})


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"), rel)))
    return out


def _owner_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def test_only_the_gate_writes_a_relay() -> None:
    offenders = [
        f"{rel}:{node.lineno} .{node.func.attr}()"
        for rel, tree in _modules()
        if rel != GATE
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RELAY_WRITES
    ]
    assert offenders == [], "relay writes outside the safety gate"


def test_only_the_gate_builds_command_topics() -> None:
    offenders = []
    for rel, tree in _modules():
        if rel == GATE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "firmware_contracts.topics":
                names = {a.name for a in node.names}
                if names & {"command_topic", "build_topic", "COMMAND_FILTER"}:
                    offenders.append(f"{rel}:{node.lineno} imports {sorted(names)}")
            # A filter with a wildcard (a simulated node subscribing) cannot be published to; a topic can.
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if literal and node.value.endswith("/command") and "+" not in node.value:
                offenders.append(f"{rel}:{node.lineno} literal {node.value!r}")
    assert offenders == [], "command topics built outside the safety gate"


def test_the_raw_publisher_is_handed_out_only_by_the_composition_root() -> None:
    offenders = [
        f"{rel}:{node.lineno}"
        for rel, tree in _modules()
        if rel != "gateway/compose.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "publish" and _owner_name(node.value) in RAW_PUBLISHERS
    ]
    assert offenders == []


def test_the_composition_root_gives_the_transport_publisher_to_the_gate_and_the_registry_only() -> None:
    tree = dict(_modules())["gateway/compose.py"]
    receivers = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        args = [*node.args, *(k.value for k in node.keywords)]
        passes = any(
            isinstance(a, ast.Attribute) and a.attr == "publish" and _owner_name(a.value) in RAW_PUBLISHERS
            for a in args
        )
        if passes:
            receivers.add(_owner_name(node.func))
    # NodeTransport wraps the broker's publish; the registry publishes (non-actuating) retained configs.
    assert receivers == {"NodeTransport", "Registry", "SafetyGate"}


def test_the_walk_sees_the_gate_itself() -> None:
    """Guard against a vacuous pass: the gate really contains the calls the other tests forbid elsewhere."""
    tree = dict(_modules())[GATE]
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "set_pump" in calls and "command_topic" in {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
    }
