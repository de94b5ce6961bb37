"""The schema files in ``schemas/``: loading (via importlib.resources), the ``$ref`` registry, ref-inlining.

The files are JSON Schema draft 2020-12 written in the keyword subset whose meaning is the same in
draft-07 (``PORTABLE_KEYWORDS``), so a ref-inlined copy can be compiled by fastjsonschema and firmware
tooling limited to draft-07 can use them too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin

if TYPE_CHECKING:
    from referencing import Registry

__all__ = [
    "ANNOTATION_KEYWORDS",
    "PORTABLE_KEYWORDS",
    "SchemaError",
    "inline_refs",
    "load_schema",
    "registry",
    "schema_int",
    "schema_names",
]

ANNOTATION_KEYWORDS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description", "examples"})
# Keywords with identical semantics in draft-07 and 2020-12. Not here on purpose: prefixItems, items-as-array,
# dependentSchemas/dependentRequired, unevaluated*, $dynamicRef, $anchor (2019+ only or changed meaning).
PORTABLE_KEYWORDS = ANNOTATION_KEYWORDS | {
    "$ref", "type", "enum", "const", "pattern", "format", "minLength", "maxLength",
    "required", "properties", "additionalProperties", "items", "minItems", "maxItems", "uniqueItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "anyOf", "allOf", "not", "if", "then", "else",
}  # fmt: skip
DRAFT07 = "http://json-schema.org/draft-07/schema#"


# A decoded schema document (JSON object); values are narrowed where they are read.
Schema = dict[str, object]


class SchemaError(RuntimeError):
    """A schema file is broken (bad $ref, recursion); a packaging or editing bug, never bad input."""


@cache
def _documents() -> dict[str, Schema]:
    folder = resources.files("firmware_contracts").joinpath("schemas")
    documents: dict[str, Schema] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            documents[entry.name[: -len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
    return documents


@cache
def _by_id() -> dict[str, Schema]:
    return {str(doc["$id"]): doc for doc in _documents().values()}


def schema_names() -> list[str]:
    """File stems of every schema, including ``common`` (shared ``$defs``)."""
    return sorted(_documents())


def load_schema(name: str) -> Schema:
    """A copy of the schema document ``schemas/<name>.json``."""
    try:
        return copy.deepcopy(_documents()[name])
    except KeyError:
        raise SchemaError(f"no schema named {name!r}") from None


@cache
def registry() -> Registry[Schema]:
    """A ``referencing`` registry holding every schema under its ``$id``."""
    # Imported here: only the reference validator (explaining a failure, tests) needs it, not the hot path.
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    pairs = [(str(doc["$id"]), Resource.from_contents(doc, DRAFT202012)) for doc in _documents().values()]
    return Registry().with_resources(pairs)


def _resolve(base_id: str, ref: str) -> tuple[str, object]:
    url, _, pointer = urljoin(base_id, ref).partition("#")
    try:
        node: object = _by_id()[url]
        for token in filter(None, pointer.split("/")):
            if not isinstance(node, dict):  # only objects are walked into, as before (a list index was a TypeError)
                raise TypeError(type(node).__name__)
            node = node[unquote(token).replace("~1", "/").replace("~0", "~")]
    except (KeyError, TypeError):
        raise SchemaError(f"unresolvable $ref {ref!r} in {base_id}") from None
    return url, node


def _inline(node: object, base_id: str, active: tuple[str, ...]) -> object:
    if isinstance(node, list):
        return [_inline(item, base_id, active) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inline(value, base_id, active) for key, value in node.items()
           if key not in ANNOTATION_KEYWORDS and key != "$ref"}  # fmt: skip
    if "$ref" not in node:
        return out
    target = urljoin(base_id, node["$ref"])
    if target in active:
        raise SchemaError(f"recursive $ref {target}: cannot inline")
    url, resolved = _resolve(base_id, node["$ref"])
    inlined = _inline(resolved, url, (*active, target))
    # In 2020-12 a $ref's siblings apply too (in draft-07 they would be ignored): keep both via allOf.
    return {"allOf": [inlined, out]} if out else inlined


def inline_refs(name: str) -> Schema:
    """A self-contained draft-07 copy of schema ``name``: every ``$ref`` replaced, annotations dropped."""
    document = _documents().get(name)
    if document is None:
        raise SchemaError(f"no schema named {name!r}")
    inlined = _inline(document, str(document["$id"]), ())
    if not isinstance(inlined, dict):  # a schema file's top level is an object: _inline keeps it one
        raise SchemaError(f"schema {name!r} is not an object")
    return {"$schema": DRAFT07, **inlined}


def schema_int(name: str, pointer: str) -> int:
    """The integer at JSON pointer ``pointer`` (``/$defs/sample_list/maxItems``) of schema ``name``."""
    document = _documents().get(name)
    if document is None:
        raise SchemaError(f"no schema named {name!r}")
    _, value = _resolve(str(document["$id"]), f"#{pointer}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{name}#{pointer} is not an integer")
    return value


def keywords_used(node: object) -> set[str]:
    """Every schema keyword used in ``node`` (for the portability check)."""
    found: set[str] = set()
    stack: list[object] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, Mapping):
            for key, value in item.items():
                found.add(key)
                if key in ("properties", "$defs"):
                    stack.extend(value.values())  # the keys here are names, not keywords
                elif key not in ("enum", "const", "required", "examples"):
                    stack.append(value)
    return found
