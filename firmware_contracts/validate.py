"""Validation of inbound and outbound payloads against the JSON Schemas in ``schemas/``.

This runs on every MQTT message, so each kind's schema is compiled once into fastjsonschema code (the
hot path, a few µs per sample); jsonschema's Draft202012Validator is the reference implementation that
checks the schema files and explains a failure in words.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, cast

import fastjsonschema

if TYPE_CHECKING:
    from jsonschema import FormatChecker, ValidationError  # type: ignore[import-untyped, unused-ignore]
    from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

from firmware_contracts.schema_store import inline_refs, load_schema, registry
from firmware_contracts.timestamps import is_rfc3339
from firmware_contracts.topics import TopicKind

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FailureCode",
    "JsonDocument",
    "MessageKind",
    "ValidationFailure",
    "check",
    "decode_and_validate",
    "kind_for_topic",
    "load_schema",
    "preload",
    "validate",
]

DEFAULT_MAX_BYTES = 65536
_MAX_REASON_CHARS = 300
_MAX_FLOAT_INT = int(sys.float_info.max)

# A decoded, schema-checked message: an object, or an array (telemetry may be a bare array of samples).
JsonDocument = dict[str, object] | list[object]


class MessageKind(StrEnum):
    """Every message kind with a schema; the value is the schema's file name."""

    NODE_HELLO = "node_hello"
    HEARTBEAT = "heartbeat"
    TELEMETRY = "telemetry"
    COMMAND = "command"
    COMMAND_RESPONSE = "command_response"
    CONFIG = "config"
    STATUS = "status"
    SERIAL_FRAME = "serial_frame"


class FailureCode(StrEnum):
    """Machine reason codes for rejected payloads (counter labels)."""

    OVERSIZE = "oversize"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NON_FINITE_NUMBER = "non_finite_number"
    SCHEMA = "schema"


class ValidationFailure(str):
    """Why a payload was rejected, as the string ``"<code>: <message>"`` with ``.code`` and ``.message``.

    Being a ``str`` it can be logged or used where a plain reason string is expected.
    """

    __slots__ = ()

    def __new__(cls, code: str, message: str) -> ValidationFailure:
        return super().__new__(cls, f"{FailureCode(code)}: {message}")

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # pickle needs (code, message)
        return (self.code, self.message)

    @property
    def code(self) -> FailureCode:
        """The machine reason code."""
        return FailureCode(self.partition(": ")[0])

    @property
    def message(self) -> str:
        """The human reason, e.g. ``telemetry[3].value: 'abc' is not of type 'number'``."""
        return self.partition(": ")[2]

    def __repr__(self) -> str:
        return f"ValidationFailure(code={self.code.value!r}, message={self.message!r})"


_TOPIC_TO_MESSAGE: dict[TopicKind, MessageKind] = {
    TopicKind.NODE_HELLO: MessageKind.NODE_HELLO,
    TopicKind.HEARTBEAT: MessageKind.HEARTBEAT,
    TopicKind.TELEMETRY: MessageKind.TELEMETRY,
    TopicKind.COMMAND: MessageKind.COMMAND,
    TopicKind.COMMAND_RESPONSE: MessageKind.COMMAND_RESPONSE,
    TopicKind.CONFIG: MessageKind.CONFIG,
    TopicKind.LWT: MessageKind.STATUS,
}


def kind_for_topic(topic_kind: TopicKind) -> MessageKind:
    """The message kind carried by a topic kind."""
    return _TOPIC_TO_MESSAGE[topic_kind]


# --- compiled validators ------------------------------------------------------------------------------


@cache
def _compiled_pattern(pattern: str) -> re.Pattern[str]:
    # JSON Schema regexes are ECMA-262, where a final "$" means end of input; Python's "$" also matches
    # before a trailing "\n", which would let "node-1\n" pass as a uid.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _ecma_pattern(
    validator: Validator, pattern: str, instance: object, schema: Mapping[str, object]
) -> Iterator[ValidationError]:
    from jsonschema import ValidationError

    if isinstance(instance, str) and _compiled_pattern(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _contract_validator_class() -> type[Validator]:
    # jsonschema (with attrs, referencing, rpds) is imported on first use: a gateway whose nodes send valid
    # payloads never needs it, and it is several MB of a Pi's memory.
    from jsonschema import Draft202012Validator, validators

    extended: type[Validator] = validators.extend(  # type: ignore[no-untyped-call, unused-ignore]
        Draft202012Validator, {"pattern": _ecma_pattern}
    )
    return extended


def _format_checker() -> FormatChecker:
    # Only the formats the contracts use, implemented here: jsonschema's own date-time check silently
    # passes everything unless an optional package is installed.
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("date-time")(is_rfc3339)
    return checker


@cache
def _validator(kind: MessageKind) -> Validator:
    """The reference validator (jsonschema, draft 2020-12): checks the schema and explains failures."""
    schema = load_schema(kind.value)
    validator_class = _contract_validator_class()
    validator_class.check_schema(schema)
    return cast("Validator", validator_class(schema, registry=registry(), format_checker=_format_checker()))


_FastValidator = Callable[[object], object]


@cache
def _fast_validator(kind: MessageKind) -> _FastValidator:
    """The hot-path validator: fastjsonschema code compiled from the ref-inlined schema (~10x jsonschema)."""
    return fastjsonschema.compile(
        inline_refs(kind.value),
        formats={"date-time": is_rfc3339},
        use_default=False,  # never write defaults into the caller's payload
    )


def preload() -> None:
    """Compile every validator now (call at start-up so a broken schema fails before the first message)."""
    _contract_validator_class().check_schema(load_schema("common"))
    for kind in MessageKind:
        _validator(kind)
        _fast_validator(kind)


# --- validation -------------------------------------------------------------------------------------------


def _path_text(kind: str, path: Iterable[object]) -> str:
    return kind + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _is_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    # An integer beyond float range would overflow when a consumer calls float() on it.
    return isinstance(value, int) and not -_MAX_FLOAT_INT <= value <= _MAX_FLOAT_INT


def _find_non_finite(payload: object) -> tuple[list[object], object] | None:
    """Path and value of the first NaN/Infinity/huge number, or None. Iterative: payloads may nest deeply."""
    stack: list[tuple[list[object], object]] = [([], payload)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(([*path, k], v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(([*path, i], v) for i, v in enumerate(value))
        elif _is_non_finite(value):
            return path, value
    return None


def _has_non_finite(payload: object) -> bool:
    # Path-free fast scan; the path is only worked out when something is found.
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, float | int) and _is_non_finite(value):
            return True
    return False


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 1] + "…"


def check(kind: MessageKind | str, payload: object) -> ValidationFailure | None:
    """Validate a decoded payload; None when valid, else the failure (code non_finite_number or schema)."""
    return _check(MessageKind(kind), payload, scan_numbers=True)


def _check(message_kind: MessageKind, payload: object, scan_numbers: bool) -> ValidationFailure | None:
    if scan_numbers and _has_non_finite(payload):
        found = _find_non_finite(payload)
        assert found is not None
        path, value = found
        reason = f"{_path_text(message_kind, path)}: {value!r} is not finite"
        return ValidationFailure(FailureCode.NON_FINITE_NUMBER, _shorten(reason))
    try:
        _fast_validator(message_kind)(payload)
        return None
    except fastjsonschema.JsonSchemaValueException as exc:
        fast_reason = exc.message
    except RecursionError:
        return ValidationFailure(FailureCode.SCHEMA, f"{message_kind}: nested too deeply")
    # Rare path: let the reference validator explain. Should it disagree, the payload is still refused.
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

    try:
        error = best_match(_validator(message_kind).iter_errors(payload))
    except RecursionError:
        error = None
    if error is None:
        return ValidationFailure(FailureCode.SCHEMA, _shorten(f"{message_kind}: {fast_reason}"))
    return ValidationFailure(
        FailureCode.SCHEMA, _shorten(f"{_path_text(message_kind, error.absolute_path)}: {error.message}")
    )


def validate(kind: MessageKind | str, payload: object) -> str | None:
    """None when ``payload`` is a valid ``kind`` message, else a short human reason."""
    failure = check(kind, payload)
    return None if failure is None else failure.message


class _NonFiniteLiteral(ValueError):
    pass


def _reject_constant(name: str) -> object:
    raise _NonFiniteLiteral(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_MAYBE_HUGE_NUMBER = re.compile(r"[0-9][eE]|[0-9]{309}")


def decode_and_validate(
    kind: MessageKind | str, raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[JsonDocument | None, ValidationFailure | None]:
    """Decode UTF-8 JSON bytes and validate them: ``(payload, None)`` or ``(None, failure)``.

    Never raises for bad input: oversize, not_utf8, malformed_json, non_finite_number and schema
    problems come back as the failure's ``code``.
    """
    message_kind = MessageKind(kind)  # an unknown kind is a programming error: let it raise
    if len(raw) > max_bytes:
        return None, ValidationFailure(FailureCode.OVERSIZE, f"{len(raw)} bytes > {max_bytes}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, ValidationFailure(FailureCode.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}")
    try:
        # Python's json accepts NaN/Infinity literals, which are not JSON: refuse them here.
        payload = _DECODER.decode(text)
    except _NonFiniteLiteral as exc:
        return None, ValidationFailure(FailureCode.NON_FINITE_NUMBER, f"{exc} literal is not JSON")
    except RecursionError:
        return None, ValidationFailure(FailureCode.MALFORMED_JSON, "nested too deeply")
    except ValueError as exc:  # JSONDecodeError, and int literals over Python's digit limit
        return None, ValidationFailure(FailureCode.MALFORMED_JSON, _shorten(str(exc)))
    # Only a number with an exponent or of 309+ digits can decode to inf or overflow float: skip the walk otherwise.
    failure = _check(message_kind, payload, scan_numbers=_MAYBE_HUGE_NUMBER.search(text) is not None)
    if failure is not None:
        return None, failure
    return cast(JsonDocument, payload), None
