"""Validation of the downlink config: JSON Schema (``schemas/config.json``) plus cross-references."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

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


def _objects(value: object) -> list[Mapping[str, object]]:
    """The JSON objects of a list the schema has already checked (anything else would be skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cross_references(doc: Mapping[str, object]) -> list[str]:
    problems: list[str] = []
    zone_docs = _objects(doc["zones"])
    node_docs = _objects(doc["nodes"])
    recipe_docs = _objects(doc["recipes"])
    zones = [str(z["uid"]) for z in zone_docs]
    recipes = [str(r["uid"]) for r in recipe_docs]
    for name, values in (
        ("zones uid", zones),
        ("nodes uid", [str(n["uid"]) for n in node_docs]),
        ("nodes hardware_id", [str(n["hardware_id"]) for n in node_docs]),
        ("recipes uid", recipes),
    ):
        problems += [f"{name} {v!r} is not unique" for v in _duplicates(values)]
    for i, node in enumerate(node_docs):
        if node["zone_uid"] is not None and node["zone_uid"] not in zones:
            problems.append(f"nodes/{i}/zone_uid: unknown zone {node['zone_uid']!r}")
    for i, zone in enumerate(zone_docs):
        if zone.get("recipe_uid") is not None and zone["recipe_uid"] not in recipes:
            problems.append(f"zones/{i}/recipe_uid: unknown recipe {zone['recipe_uid']!r}")
    for i, recipe in enumerate(recipe_docs):
        for j, phase in enumerate(_objects(recipe["phases"])):
            targets = phase["targets"]
            for metric, rng in (targets.items() if isinstance(targets, dict) else ()):
                lo = _number(rng.get("min")) if isinstance(rng, dict) else None
                hi = _number(rng.get("max")) if isinstance(rng, dict) else None
                if lo is not None and hi is not None and lo > hi:
                    problems.append(f"recipes/{i}/phases/{j}/targets/{metric}: min > max")
    return problems
