"""decode_and_validate on hostile bytes: oversize, not UTF-8, malformed, NaN/Infinity, schema, nesting."""

from __future__ import annotations

import json
import pickle
import timeit

import pytest

from firmware_contracts.topics import TopicKind
from firmware_contracts.validate import (
    FailureCode,
    MessageKind,
    ValidationFailure,
    check,
    decode_and_validate,
    kind_for_topic,
    preload,
    validate,
)

SAMPLE = {"metric_type": "ph", "value": 5.84, "ts": 1735732800, "channel": "ph1"}


def _raw(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_valid_bytes_decode_to_the_payload() -> None:
    payload, failure = decode_and_validate("telemetry", _raw(SAMPLE))
    assert failure is None
    assert payload == SAMPLE
    payload, failure = decode_and_validate(MessageKind.TELEMETRY, _raw([SAMPLE, SAMPLE]))
    assert failure is None
    assert payload == [SAMPLE, SAMPLE]


def test_oversize_is_refused_before_parsing() -> None:
    raw = _raw({"samples": [SAMPLE] * 2000})
    assert len(raw) > 65536
    payload, failure = decode_and_validate("telemetry", raw)
    assert payload is None
    assert failure is not None and failure.code == FailureCode.OVERSIZE
    assert str(failure) == f"oversize: {len(raw)} bytes > 65536"
    _, failure = decode_and_validate("telemetry", _raw(SAMPLE), max_bytes=10)
    assert failure is not None and failure.code == "oversize"
    _, failure = decode_and_validate("telemetry", b"{" * 70_000)
    assert failure is not None and failure.code == "oversize"


@pytest.mark.parametrize(
    "raw", [b'{"metric_type":"ph","value":5.8,"channel":"\xff"}', b"\xc3\x28", b"\xef\xbb"]
)
def test_not_utf8(raw: bytes) -> None:
    payload, failure = decode_and_validate("telemetry", raw)
    assert payload is None
    assert failure is not None and failure.code == FailureCode.NOT_UTF8


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b'{"metric_type":"ph","value":5.8,}',
        b"{'metric_type':'ph','value':5.8}",
        b'{"metric_type":"ph","value":5.8}{"metric_type":"ph","value":5.8}',
        b'{"metric_type":"ph","value":0x10}',
        b'\xef\xbb\xbf{"metric_type":"ph","value":5.8}',  # UTF-8 BOM
        b'{"metric_type":"ph","value":' + b"9" * 5000 + b"}",  # over Python's int digit limit
        b"[" * 60_000 + b"]" * 10,  # deep nesting
    ],
)
def test_malformed_json(raw: bytes) -> None:
    payload, failure = decode_and_validate("telemetry", raw)
    assert payload is None
    assert failure is not None and failure.code == FailureCode.MALFORMED_JSON


@pytest.mark.parametrize(
    "raw",
    [
        b'{"metric_type":"ph","value":NaN}',
        b'{"metric_type":"ph","value":Infinity}',
        b'{"metric_type":"ph","value":-Infinity}',
        b'[{"metric_type":"ph","value":1},{"metric_type":"ph","value":1,"raw":{"x":[NaN]}}]',
        b'{"metric_type":"ph","value":1e999}',  # a legal literal that parses to inf
        b'{"metric_type":"ph","value":-1e400}',
        b'{"metric_type":"ph","value":1' + b"0" * 400 + b"}",  # an int no float can hold
    ],
)
def test_non_finite_numbers_are_refused(raw: bytes) -> None:
    payload, failure = decode_and_validate("telemetry", raw)
    assert payload is None
    assert failure is not None and failure.code == FailureCode.NON_FINITE_NUMBER


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_python_side_rejects_nan_and_inf(bad: float) -> None:
    reason = validate("telemetry", {**SAMPLE, "value": bad})
    assert reason is not None and reason.startswith("telemetry.value: ")
    failure = check("telemetry", [SAMPLE, {**SAMPLE, "raw": {"deep": [1, bad]}}])
    assert failure is not None
    assert failure.code == "non_finite_number"
    assert failure.message.startswith("telemetry[1].raw.deep[1]: ")
    assert validate("heartbeat", {"uptime_s": 1, "rssi": -50, "free_heap": 1, "extra": bad}) is not None


def test_schema_violation_reason() -> None:
    raw = _raw([SAMPLE, SAMPLE, SAMPLE, {**SAMPLE, "value": "abc"}])
    payload, failure = decode_and_validate("telemetry", raw)
    assert payload is None
    assert failure is not None and failure.code == FailureCode.SCHEMA
    assert failure == "schema: telemetry[3].value: 'abc' is not of type 'number'"
    assert failure.message == "telemetry[3].value: 'abc' is not of type 'number'"


def test_wrong_top_level_type_for_kind() -> None:
    _, failure = decode_and_validate("heartbeat", b"[1,2,3]")
    assert failure is not None and failure.code == "schema"
    assert failure.message == "heartbeat: [1, 2, 3] is not of type 'object'"
    _, failure = decode_and_validate("command_response", b'"ACK"')
    assert failure is not None and failure.code == "schema"


def test_deep_but_parseable_nesting_does_not_crash() -> None:
    deep: object = 1
    for _ in range(900):
        deep = {"a": deep}
    raw = json.dumps({"uptime_s": 1, "rssi": -50, "free_heap": 1, "blob": deep}).encode()
    payload, failure = decode_and_validate("heartbeat", raw)
    assert failure is None
    assert payload is not None


def test_huge_error_messages_are_shortened() -> None:
    failure = check("heartbeat", ["x" * 10_000])
    assert failure is not None
    assert len(failure.message) <= 300


def test_validation_failure_is_a_string_with_code_and_message() -> None:
    failure = ValidationFailure("malformed_json", "Expecting value: line 1 column 1 (char 0)")
    assert isinstance(failure, str)
    assert failure == "malformed_json: Expecting value: line 1 column 1 (char 0)"
    assert failure.code is FailureCode.MALFORMED_JSON
    assert failure.message == "Expecting value: line 1 column 1 (char 0)"
    assert pickle.loads(pickle.dumps(failure)) == failure
    assert "malformed_json" in repr(failure)
    with pytest.raises(ValueError):
        ValidationFailure("not_a_code", "x")


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        validate("telemetryy", SAMPLE)
    with pytest.raises(ValueError):
        decode_and_validate("telemetryy", b"{}")


def test_every_inbound_topic_kind_maps_to_a_message_kind() -> None:
    assert {kind_for_topic(kind) for kind in TopicKind} == set(MessageKind) - {MessageKind.SERIAL_FRAME}
    assert kind_for_topic(TopicKind.LWT) is MessageKind.STATUS


def test_validation_is_fast_enough_for_every_message() -> None:
    """A single sample costs a few µs (fastjsonschema); a regression to per-call compilation costs ms."""
    preload()
    raw = _raw(SAMPLE)
    runs = 300
    best = min(timeit.repeat(lambda: decode_and_validate("telemetry", raw), number=runs, repeat=5)) / runs
    # Measured ~9 µs on the dev box; the bound leaves room for a loaded 2-core CI machine.
    assert best < 200e-6
