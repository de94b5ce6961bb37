"""The golden example payloads in ``examples/``, for tests, simulators and the firmware team's CI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["GoldenExample", "InvalidExample", "golden_examples", "invalid_examples"]

INVALID_DIR = "invalid"


@dataclass(frozen=True, slots=True)
class GoldenExample:
    """A payload that must keep validating as ``kind``."""

    kind: str
    name: str
    payload: object


@dataclass(frozen=True, slots=True)
class InvalidExample:
    """A payload that must fail as ``kind`` with a reason containing ``reason_contains``."""

    kind: str
    name: str
    payload: object
    reason_contains: str


def _examples_root() -> Traversable:
    return resources.files("firmware_contracts").joinpath("examples")


def _json_files(folder: Traversable) -> list[Traversable]:
    return sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)


def _load(file: Traversable) -> object:
    return json.loads(file.read_text(encoding="utf-8"))


def golden_examples(kind: str | None = None) -> list[GoldenExample]:
    """Every golden example (or only those of ``kind``), sorted by kind and name."""
    found: list[GoldenExample] = []
    for folder in sorted(_examples_root().iterdir(), key=lambda f: f.name):
        if not folder.is_dir() or folder.name == INVALID_DIR or kind not in (None, folder.name):
            continue
        found.extend(GoldenExample(folder.name, f.name[:-5], _load(f)) for f in _json_files(folder))
    return found


def invalid_examples() -> list[InvalidExample]:
    """Every broken example with the reason it must fail for."""
    found: list[InvalidExample] = []
    for file in _json_files(_examples_root().joinpath(INVALID_DIR)):
        entry = _load(file)
        if not isinstance(entry, dict):
            raise TypeError(f"invalid example {file.name}: expected an object")
        found.append(
            InvalidExample(str(entry["kind"]), file.name[:-5], entry["payload"], str(entry["reason_contains"]))
        )
    return found
