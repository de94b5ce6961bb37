"""The upstream config document (sync/schemas/config.json) as typed dictionaries.

The downlink validates every document against the JSON schema before the gateway sees it, so these are
views of schema-valid data: optional keys are ``total=False``, nullable ones ``| None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict, cast


class UpstreamZone(TypedDict, total=False):
    """One zone: identity, optional water cycle and recipe assignment."""

    uid: str
    name: str | None
    water_cycle: dict[str, object] | None
    recipe_uid: str | None
    recipe_started_at: str | None


class UpstreamNode(TypedDict, total=False):
    """One node assignment."""

    uid: str
    hardware_id: str
    zone_uid: str | None
    node_type: str | None


class UpstreamPhase(TypedDict, total=False):
    """One recipe phase in the central format (durations, not start days)."""

    name: str
    duration_days: int | None
    targets: dict[str, dict[str, float]] | None
    irrigation_schedule: str | None
    irrigation_duration_s: int
    light_schedule: str | None


class UpstreamRecipe(TypedDict, total=False):
    """One recipe in the central format."""

    uid: str
    name: str
    phases: list[UpstreamPhase]


class UpstreamConfig(TypedDict, total=False):
    """The whole document the downlink hands over."""

    version: int
    gateway_id: str
    zones: list[UpstreamZone]
    nodes: list[UpstreamNode]
    recipes: list[UpstreamRecipe]


class UpstreamCommand(TypedDict, total=False):
    """A pending command fetched from upstream."""

    cmd_id: str
    zone_uid: str | None
    node_uid: str | None
    channel: str | None
    cmd: str
    params: dict[str, object] | None


def as_config(doc: Mapping[str, object]) -> UpstreamConfig:
    """The schema-valid document the downlink passed, seen through its type (validated there, not here)."""
    return cast(UpstreamConfig, doc)


def as_command(cmd: Mapping[str, object]) -> UpstreamCommand:
    """A schema-valid upstream command, seen through its type."""
    return cast(UpstreamCommand, cmd)
