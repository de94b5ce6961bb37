"""Golden examples keep validating, broken ones fail for their stated reason, and the schemas stay sane."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from firmware_contracts import validate as contracts
from firmware_contracts.golden import GoldenExample, InvalidExample, golden_examples, invalid_examples
from firmware_contracts.schema_store import (
    PORTABLE_KEYWORDS,
    inline_refs,
    keywords_used,
    load_schema,
    schema_names,
)
from firmware_contracts.validate import MessageKind, check, validate

GOLDEN = golden_examples()
INVALID = invalid_examples()


def _ids(example: GoldenExample | InvalidExample) -> str:
    return f"{example.kind}/{example.name}"


@pytest.mark.parametrize("example", GOLDEN, ids=_ids)
def test_golden_example_is_valid(example: GoldenExample) -> None:
    assert validate(example.kind, example.payload) is None


@pytest.mark.parametrize("example", INVALID, ids=_ids)
def test_invalid_example_fails_with_its_reason(example: InvalidExample) -> None:
    reason = validate(example.kind, example.payload)
    assert reason is not None, f"{example.name} unexpectedly valid"
    assert example.reason_contains in reason


def test_every_kind_has_several_golden_examples_and_some_broken_ones() -> None:
    for kind in MessageKind:
        assert len(golden_examples(kind)) >= 3, kind
    broken_kinds = {example.kind for example in INVALID}
    assert broken_kinds == {kind.value for kind in MessageKind}


def test_telemetry_batch_of_ten_is_a_golden_example() -> None:
    batch = next(e for e in golden_examples("telemetry") if e.name == "batch_of_10")
    assert len(batch.payload["samples"]) == 10


def test_overcurrent_response_is_exactly_seed_003() -> None:
    example = next(e for e in golden_examples("command_response") if e.name == "overcurrent_seed_003")
    assert example.payload == {
        "cmd": "run_pump",
        "cmd_id": "...",
        "status": "ERROR",
        "error_code": "overcurrent",
        "details": {"channel": "pump_recirc", "current_ma": 2300, "threshold_ma": 1500},
    }


def test_every_schema_is_a_valid_draft_2020_12_schema_with_an_id() -> None:
    names = schema_names()
    assert set(names) == {kind.value for kind in MessageKind} | {"common"}
    for name in names:
        schema = load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith(f"/{name}.json")


def test_schemas_only_use_keywords_that_mean_the_same_in_draft_07() -> None:
    # The hot path compiles a draft-07 copy; a 2019+ keyword would be silently ignored there.
    for name in schema_names():
        unknown = keywords_used(load_schema(name)) - PORTABLE_KEYWORDS
        assert not unknown, f"{name}.json uses {sorted(unknown)}"


def test_inlined_schemas_have_no_refs_left() -> None:
    for kind in MessageKind:
        assert '"$ref"' not in json.dumps(inline_refs(kind.value))


def test_forward_compatibility_policy() -> None:
    """Node-originated hello/heartbeat/status accept extra keys; commands and responses refuse them."""
    hello = {"message_type": "node_hello", "hardware_id": "a1", "node_type": "ph", "fw_version": "1.0.0"}
    assert validate("node_hello", {**hello, "new_field": {"x": 1}}) is None
    assert validate("heartbeat", {"uptime_s": 1, "rssi": -50, "free_heap": 1, "new_field": 1}) is None
    assert validate("status", {"status": "online", "new_field": 1}) is None
    assert validate("command", {"cmd": "x", "cmd_id": "1", "params": {}, "extra": 1}) is not None
    assert validate("command_response", {"cmd": "x", "cmd_id": "1", "status": "ACK", "extra": 1}) is not None


# --- the fast (fastjsonschema) and reference (jsonschema 2020-12) validators must agree ------------------

_WEIRD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 10**20, "", "x", "ph1\n", "a" * 65, "ACK", "NC", "active_close",
    "2025-02-30T00:00:00Z", "2025-03-01T12:00:00+24:00", "2025-03-01t12:00:00z", "1969-12-31T23:59:59Z",
    1735732800123, 946684799, 946684800, 4102444800, [], {}, [1], {"a": 1},
]  # fmt: skip


def _mutations(payload: Any) -> Iterator[Any]:
    """The payload with each key deleted or replaced by odd values, recursing into nested objects/lists."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            yield {k: v for k, v in payload.items() if k != key}
            for weird in _WEIRD_VALUES:
                yield {**payload, key: weird}
            for inner in _mutations(value):
                yield {**payload, key: inner}
    elif isinstance(payload, list) and payload:
        yield payload[1:]
        for inner in _mutations(payload[0]):
            yield [inner, *payload[1:]]


def _corpus() -> Iterator[tuple[str, Any]]:
    for example in GOLDEN:
        yield example.kind, example.payload
        for mutated in _mutations(example.payload):
            yield example.kind, mutated
    for broken in INVALID:
        yield broken.kind, broken.payload


def test_fast_and_reference_validators_agree_on_a_mutation_corpus() -> None:
    checked = 0
    for kind, payload in _corpus():
        message_kind = MessageKind(kind)
        snapshot = copy.deepcopy(payload)
        reference_ok = contracts._validator(message_kind).is_valid(payload)
        try:
            contracts._fast_validator(message_kind)(payload)
            fast_ok = True
        except fastjsonschema.JsonSchemaValueException:
            fast_ok = False
        assert fast_ok == reference_ok, f"{kind}: fast={fast_ok} reference={reference_ok} on {payload!r}"
        assert payload == snapshot, "validation must not modify the payload"
        checked += 1
    assert checked > 3000


def test_a_schema_failure_is_explained_by_the_reference_validator() -> None:
    failure = check("telemetry", {"metric_type": "ph", "value": "abc"})
    assert failure is not None
    assert failure.code == "schema"
    assert failure.message == "telemetry.value: 'abc' is not of type 'number'"


def test_readme_examples_validate() -> None:
    """The firmware team copies from the README, so its examples are checked like the golden files."""
    readme = (Path(__file__).parents[3] / "firmware_contracts" / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", readme, re.S)
    # The second telemetry block is the "Message identity" section's.
    kinds = ["node_hello", "heartbeat", "telemetry", "command", "command_response", "config", "telemetry",
             "serial_frame"]
    assert len(blocks) == len(kinds)
    for kind, block in zip(kinds, blocks, strict=True):
        documents = block.strip().splitlines() if kind == "telemetry" else [block]
        for document in documents:
            assert validate(kind, json.loads(document)) is None, document
