"""Validation of the downlink config: JSON Schema (``schemas/config.json``) plus cross-references."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # jsonschema ships no type hints; "unused-ignore" keeps mypy quiet once types-jsonschema is installed.
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]


@cache
def config_schema() -> dict[str, object]:
    """The bundled JSON Schema of the gateway config."""
    text = resources.files("sync").joinpath("schemas/config.json").read_text(encoding="utf-8")
    schema: dict[str, object] = json.loads(text)
    return schema


@cache
def _validator() -> Draft202012Validator:
    # Imported on first use: a config arrives rarely, and jsonschema is several MB of a Pi's memory.
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(config_schema())
    return Draft202012Validator(config_schema())


def validate_config(doc: object) -> list[str]:
    """Every problem found (empty list = valid); each names the JSON path."""
    problems = [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems or not isinstance(doc, dict):  # the schema allows only an object at the root
        return problems
    return _cross_references(doc)


def _duplicates(values: list[str]) -> list[str]:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def _cross_references(doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    zones = [z["uid"] for z in doc["zones"]]
    recipes = [r["uid"] for r in doc["recipes"]]
    for name, values in (
        ("zones uid", zones),
        ("nodes uid", [n["uid"] for n in doc["nodes"]]),
        ("nodes hardware_id", [n["hardware_id"] for n in doc["nodes"]]),
        ("recipes uid", recipes),
    ):
        problems += [f"{name} {v!r} is not unique" for v in _duplicates(values)]
    for i, node in enumerate(doc["nodes"]):
        if node["zone_uid"] is not None and node["zone_uid"] not in zones:
            problems.append(f"nodes/{i}/zone_uid: unknown zone {node['zone_uid']!r}")
    for i, zone in enumerate(doc["zones"]):
        if zone.get("recipe_uid") is not None and zone["recipe_uid"] not in recipes:
            problems.append(f"zones/{i}/recipe_uid: unknown recipe {zone['recipe_uid']!r}")
    for i, recipe in enumerate(doc["recipes"]):
        for j, phase in enumerate(recipe["phases"]):
            for metric, rng in phase["targets"].items():
                if rng["min"] > rng["max"]:
                    problems.append(f"recipes/{i}/phases/{j}/targets/{metric}: min > max")
    return problems
