"""Narrowing helpers for JSON documents read back from ``kv_state`` or a request body.

A decoded JSON value is ``object`` until checked. These helpers convert exactly as the plain builtins
would (``float(v)``, ``str(s) for s in v``) and raise the same ``TypeError`` on a value of the wrong
kind, so a corrupt document fails the way it did before, only now the types say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def to_float(value: object) -> float:
    """``float(value)`` for a number or numeric string; TypeError for anything else."""
    if isinstance(value, int | float | str):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def opt_float(value: object) -> float | None:
    """None stays None, anything else goes through ``to_float``."""
    return None if value is None else to_float(value)


def to_int(value: object) -> int:
    """``int(value)`` for a number or numeric string; TypeError for anything else."""
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def str_tuple(value: object) -> tuple[str, ...]:
    """Every item of an iterable as ``str``; TypeError when ``value`` is not iterable."""
    if isinstance(value, Iterable):
        return tuple(str(s) for s in value)
    raise TypeError(f"expected a list, got {type(value).__name__}")


def as_list(value: object) -> list[object]:
    """The items of an iterable as a list; TypeError when ``value`` is not iterable."""
    if isinstance(value, Iterable):
        return list(value)
    raise TypeError(f"expected a list, got {type(value).__name__}")


def as_mapping(value: object) -> Mapping[str, object]:
    """``value`` as a string-keyed mapping (keys converted with ``str``); TypeError when it is not one."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    raise TypeError(f"expected an object, got {type(value).__name__}")
