"""Typed gateway settings: the only module that reads the config file, secret files and the environment.

Settings are read once at start, validated, and passed down. Every problem is reported as one line
naming the key and the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator, model_validator

from drivers.config import ConfigProblems, HardwareConfig
from gateway.automation.config import AutomationConfig, AutomationConfigError, automation_config_from_dict
from gateway.automation.recipes import Recipe, RecipeError, assignment_for, recipe_from_dict
from gateway.water.config import ConfigError, WaterCycleConfig, water_cycle_from_dict


class SettingsError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Mode(StrEnum):
    """Production refuses anonymous MQTT and requires secrets; demo runs a simulated greenhouse."""

    PRODUCTION = "production"
    DEMO = "demo"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """Identity of this greenhouse gateway."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    greenhouse_uid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    mode: Mode = Mode.PRODUCTION
    data_dir: Path = Path("/var/lib/hydro-gateway")
    timezone: str = "UTC"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("timezone")
    @classmethod
    def _known_tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


class BrokerUser(_Section):
    """A broker account: nodes publish only under their own uid; services anywhere but command/config topics."""

    username: str = Field(min_length=1, max_length=64)
    password_hash: str = Field(min_length=1)
    role: Literal["node", "service"] = "node"


class BrokerSection(_Section):
    """The embedded MQTT broker."""

    host: str = "0.0.0.0"
    port: int = Field(default=1883, ge=0, le=65535)
    allow_anonymous: bool = False
    password_file: Path | None = None
    users: tuple[BrokerUser, ...] = ()
    max_connections: int = Field(default=200, ge=1)
    keepalive_grace: float = Field(default=1.5, ge=1.0, le=5.0)
    max_payload_bytes: int = Field(default=65536, ge=256)
    client_queue_max: int = Field(default=1000, ge=10)
    # With ingest.router_queue_max, the size of the one queue from the broker to the router (compose.py):
    # ~1 KB of RSS per waiting message, 1,500 is ~0.2 s of the router's rate; deeper only held memory (RSS target).
    broadcast_queue_max: int = Field(default=1000, ge=100)
    rate_limit_msgs_per_s: float = Field(default=500.0, gt=0)
    rate_limit_burst: int = Field(default=1000, ge=1)
    inflight_retry_s: float = Field(default=20.0, gt=0)
    session_expiry_s: float = Field(default=7 * 86400.0, gt=0)
    # Pre-login connections (TCP open, CONNECT not yet received), see gateway/broker/prelogin.py.
    connect_timeout_s: float = Field(default=10.0, gt=0)
    prelogin_max: int = Field(default=256, ge=1)
    prelogin_max_per_ip: int = Field(default=64, ge=1)
    prelogin_pressure_at: int = Field(default=64, ge=0)
    connect_timeout_pressure_s: float = Field(default=2.0, gt=0)


class WebSection(_Section):
    """The local status page and JSON API."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    admin_user: str = "admin"
    admin_token: str | None = None
    admin_token_file: Path | None = None
    public_read: bool = True


class IngestSection(_Section):
    """Telemetry batching into SQLite."""

    batch_size: int = Field(default=200, ge=1, le=100_000)
    # Group commit: the first waiting message lingers at most this long for company before its commit
    # (acknowledgements wait for the commit, so this is latency a node pays, not data at risk).
    flush_interval_ms: int = Field(default=20, ge=0)
    # SQLite's synchronous pragma: NORMAL (WAL synced at checkpoints; a power cut may lose the last
    # commits) or FULL (WAL synced at every commit; a power cut loses nothing acknowledged).
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Rows waiting for the writer, besides the batch being committed (up to 10 x batch_size): with 2,000 the
    # next full batch is ready when a commit ends, so more only held memory (ingest bench RSS target).
    queue_max: int = Field(default=2_000, ge=100)
    # Messages between broker and router (~1 KB each): the router drains it on the same loop, depth buys nothing.
    router_queue_max: int = Field(default=500, ge=100)
    max_future_skew_s: float = Field(default=300.0, ge=0)


class StorageSection(_Section):
    """The local SQLite buffer: disk-full protection (see gateway/storage.py) and corruption handling."""

    # Pre-allocated next to the database and deleted when SQLite reports the disk full, so that the
    # alert, the gap record and the commits already waiting still fit.
    reserve_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    warn_pct: float = Field(default=80.0, gt=0, le=100)
    critical_pct: float = Field(default=95.0, gt=0, le=100)
    poll_s: float = Field(default=5.0, gt=0)
    # A database that fails its integrity check at start (or reported corruption at run time):
    # "move_aside" keeps it under a timestamped name and starts a fresh one (with an alert);
    # "exit" stops the process at once with a clear message so an operator can look first.
    on_corrupt: Literal["move_aside", "exit"] = "move_aside"
    # PRAGMA quick_check reads the whole file: up to this size at start (about 5-10 s on an SD card),
    # a larger file is checked in the background while the gateway already runs (restart if it fails).
    quick_check_max_bytes: int = Field(default=256_000_000, ge=0)


class NodesSection(_Section):
    """Node health supervision."""

    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    offline_after_missed: int = Field(default=3, ge=1)


class CommandsSection(_Section):
    """Command lifecycle."""

    timeout_s: float = Field(default=30.0, gt=0)
    sweep_interval_s: float = Field(default=1.0, gt=0)


class UpstreamSection(_Section):
    """Store-and-forward to the central system."""

    url: str = ""
    token: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    interval_s: float = Field(default=5.0, gt=0)
    telemetry_batch: int = Field(default=2000, ge=1)
    batch_max_bytes: int = Field(default=2_000_000, ge=1024)
    unreachable_alert_after_s: float = Field(default=900.0, ge=0)
    config_poll_s: float = Field(default=300.0, gt=0)
    retention_days: float = Field(default=14.0, gt=0)
    db_budget_bytes: int = Field(default=2_000_000_000, ge=1_000_000)


class SafetySection(_Section):
    """Safety loop timing and default limits per pump channel."""

    poll_hz: float = Field(default=10.0, gt=0, le=200)
    overcurrent_a: float = Field(default=1.5, gt=0)
    idle_current_a: float = Field(default=0.1, ge=0)
    min_flow_l_min: float = Field(default=0.5, ge=0)
    no_flow_grace_s: float = Field(default=20.0, gt=0)
    stale_after_s: float = Field(default=30.0, gt=0)
    min_water_level: float = Field(default=15.0, ge=0)
    # drain/fill pumps without a flow sensor: the level must move this much (%) within no_flow_grace_s
    level_change_min: float = Field(default=0.5, gt=0)
    max_failures: int = Field(default=3, ge=1)
    failure_window_s: float = Field(default=3600.0, gt=0)
    # NC pumps: the longest OFF without an explicit lease when the zone's water_cycle names no max_recirc_off
    max_nc_off_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SafetySection:
        if self.overcurrent_a <= self.idle_current_a:
            raise ConfigProblems([
                f"safety.overcurrent_a: {self.overcurrent_a} A must be above safety.idle_current_a"
                f" ({self.idle_current_a} A), or every running pump trips"
            ])
        return self


class ActuatorRef(_Section):
    """Where a zone's actuator is: a gateway relay channel (no node_uid) or a node's channel."""

    channel: str = Field(min_length=1, max_length=64)
    node_uid: str | None = None
    ml_per_s: float | None = Field(default=None, gt=0)  # dosing pumps: delivery rate
    flow_l_min: float | None = Field(default=None, gt=0)  # nominal flow, for water usage without a sensor
    # Node pumps only (a gateway relay's polarity is in [hardware]): NC pumps run when the node's coil drops.
    fail_safe_mode: Literal["NC", "NO"] = "NO"
    # Node pumps: channel telemetry the node reports for this pump (pump_current, flow_rate with this channel).
    telemetry: list[Literal["current", "flow"]] = Field(default_factory=list)


ACTUATOR_ROLES = ("recirc", "drain", "fill", "irrigation", "light", "ph_down", "ph_up", "nutrient_a", "nutrient_b")


def _water_cycle(value: object) -> WaterCycleConfig | None:
    """A zone's ``water_cycle`` table (or an already parsed one); empty or absent means none is configured."""
    if value is None or isinstance(value, WaterCycleConfig):
        return value
    if isinstance(value, dict) and not value:
        return None
    if not isinstance(value, dict):
        raise ConfigError("water_cycle", "must be a table/object")
    return water_cycle_from_dict(value)


def _recipes(value: object) -> dict[str, Recipe]:
    """The ``[recipes]`` tables, name → Recipe (already parsed ones pass through)."""
    if not isinstance(value, dict):
        raise RecipeError("recipes", "must be a table/object of recipes")
    return {
        name: body if isinstance(body, Recipe) else recipe_from_dict(str(name), body) for name, body in value.items()
    }


def _automation(value: object) -> AutomationConfig:
    """The ``[automation]`` table (or an already parsed one)."""
    if isinstance(value, AutomationConfig):
        return value
    if not isinstance(value, dict):
        raise AutomationConfigError("automation", "expected a table/object")
    return automation_config_from_dict(value)


# The domain sections are parsed by their own modules (errors name the key path); pydantic only holds them.
WaterCycleField = Annotated[WaterCycleConfig | None, PlainValidator(_water_cycle)]
RecipesField = Annotated[dict[str, Recipe], PlainValidator(_recipes)]
AutomationField = Annotated[AutomationConfig, PlainValidator(_automation)]


class ZoneConfig(_Section):
    """A zone (tank + its pumps) of this greenhouse."""

    uid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = ""
    water_cycle: WaterCycleField = None
    actuators: dict[str, ActuatorRef] = Field(default_factory=dict)
    tank_volume_l: float = Field(default=200.0, gt=0)
    recipe: str | None = None
    recipe_start: str | None = None

    @field_validator("actuators")
    @classmethod
    def _known_roles(cls, value: dict[str, ActuatorRef]) -> dict[str, ActuatorRef]:
        unknown = sorted(set(value) - set(ACTUATOR_ROLES))
        if unknown:
            raise ValueError(f"unknown actuator roles {unknown}; known: {list(ACTUATOR_ROLES)}")
        return value


class NodeConfig(_Section):
    """A node assignment: hardware id → uid and zone."""

    hardware_id: str = Field(min_length=1, max_length=64)
    uid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    zone: str | None = None
    node_type: str = ""


class Settings(_Section):
    """The whole validated configuration."""

    gateway: GatewaySection
    broker: BrokerSection = BrokerSection()
    web: WebSection = WebSection()
    ingest: IngestSection = IngestSection()
    storage: StorageSection = StorageSection()
    nodes_health: NodesSection = NodesSection()
    commands: CommandsSection = CommandsSection()
    upstream: UpstreamSection = UpstreamSection()
    hardware: HardwareConfig = HardwareConfig()
    safety: SafetySection = SafetySection()
    zones: tuple[ZoneConfig, ...] = ()
    nodes: tuple[NodeConfig, ...] = ()
    recipes: RecipesField = Field(default_factory=dict)
    automation: AutomationField = Field(default_factory=AutomationConfig)
    source: str = "<built-in>"

    @property
    def db_path(self) -> Path:
        """The SQLite buffer."""
        return self.gateway.data_dir / "gateway.db"

    @property
    def is_demo(self) -> bool:
        """True in demo mode."""
        return self.gateway.mode is Mode.DEMO

    @property
    def no_external_watchdog(self) -> bool:
        """The config declares that no external dead-man circuit is fitted (``external_watchdog = false``).

        The gateway then raises the warning alert ``infra_no_external_watchdog`` at start: only the
        in-process watchdog thread and systemd remain to release the relays if the process hangs.
        """
        return self.hardware.watchdog.external_watchdog is False


def _read_secret(path: Path, key: str, source: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError([f"{key}: cannot read {path}: {exc.strerror} ({source})"]) from exc
    if not value:
        raise SettingsError([f"{key}: {path} is empty ({source})"])
    return value


def _format_errors(exc: ValidationError, source: str) -> list[str]:
    lines: list[str] = []
    for err in exc.errors():
        problems = err.get("ctx", {}).get("error")
        if isinstance(problems, ConfigProblems):  # already one keyed line per mistake
            lines.extend(f"{line} ({source})" for line in problems.problems)
            continue
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if isinstance(problems, ConfigError | RecipeError | AutomationConfigError):
            # their paths start at the section name (``water_cycle.recirc…``, ``recipes.x…``, ``automation.…``)
            parent = ".".join(str(p) for p in err["loc"][:-1])
            lines.append(f"{parent + '.' if parent else ''}{problems} ({source})")
            continue
        lines.append(f"{key}: {err['msg']} ({source})")
    return lines


def _read_password_file(path: Path, source: str) -> tuple[BrokerUser, ...]:
    users = []
    text = _read_secret(path, "broker.password_file", source)
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name or not hashed:
            raise SettingsError([f"broker.password_file: {path}:{lineno}: expected 'username:hash' ({source})"])
        role: Literal["node", "service"] = "service" if name.startswith("svc-") else "node"
        users.append(BrokerUser(username=name, password_hash=hashed, role=role))
    return tuple(users)


def _resolve_secrets(settings: Settings, problems: list[str], bad_recipes: set[str]) -> Settings:
    """Load secret files named in the config and enforce production rules and cross-references.

    ``problems`` are those already found in the domain sections (reported together with these).
    """
    src = settings.source
    web, upstream, broker = settings.web, settings.upstream, settings.broker
    if web.admin_token is None and web.admin_token_file is not None:
        web = web.model_copy(update={"admin_token": _read_secret(web.admin_token_file, "web.admin_token_file", src)})
    if upstream.token is None and upstream.token_file is not None:
        token = _read_secret(upstream.token_file, "upstream.token_file", src)
        upstream = upstream.model_copy(update={"token": token})
    if broker.password_file is not None:
        extra = _read_password_file(broker.password_file, src)
        broker = broker.model_copy(update={"users": broker.users + extra})
    if settings.gateway.mode is Mode.PRODUCTION:
        if upstream.url and not upstream.token:
            problems.append(f"upstream.token_file: required when upstream.url is set ({src})")
        if upstream.url and not upstream.url.startswith("https://"):
            problems.append(f"upstream.url: must be https:// in production ({src})")
        if broker.allow_anonymous:
            problems.append(f"broker.allow_anonymous: not allowed in production mode ({src})")
        if not web.admin_token:
            problems.append(f"web.admin_token_file: required in production mode ({src})")
        wd = settings.hardware.watchdog
        if settings.hardware.relays and wd.heartbeat_pin is None and wd.external_watchdog is not False:
            problems.append(
                "hardware.watchdog.heartbeat_pin: required in production mode to feed the external dead-man "
                f"circuit; if none is fitted, say so with external_watchdog = false ({src})"
            )
    if upstream.ca_file is not None and not upstream.ca_file.is_file():
        problems.append(f"upstream.ca_file: {upstream.ca_file} does not exist ({src})")
    zone_uids = {z.uid for z in settings.zones}
    for i, relay in enumerate(settings.hardware.relays):
        if relay.zone is None:
            problems.append(f"hardware.relays.{i}.zone: required: the zone whose pump this relay switches ({src})")
        elif relay.zone not in zone_uids:
            problems.append(f"hardware.relays.{i}.zone: unknown zone {relay.zone!r} ({src})")
    for i, node in enumerate(settings.nodes):
        if node.zone is not None and node.zone not in zone_uids:
            problems.append(f"nodes.{i}.zone: unknown zone {node.zone!r} ({src})")
    relay_names = {r.name for r in settings.hardware.relays}
    node_uids = {n.uid for n in settings.nodes}
    for i, zone in enumerate(settings.zones):
        for role, ref in zone.actuators.items():
            if ref.node_uid is None and ref.channel not in relay_names:
                problems.append(f"zones.{i}.actuators.{role}.channel: no hardware relay named {ref.channel!r} ({src})")
            if ref.node_uid is not None and ref.node_uid not in node_uids:
                problems.append(f"zones.{i}.actuators.{role}.node_uid: unknown node {ref.node_uid!r} ({src})")
    problems.extend(_assignment_problems(settings, bad_recipes, src))
    for i, dev in enumerate(settings.hardware.ina209):
        if dev.channel is None:  # the drivers allow a free-standing monitor; the gateway supervises pumps
            problems.append(f"hardware.ina209.{i}.channel: required: the relay whose pump current it measures ({src})")
    if problems:
        raise SettingsError(problems)
    return settings.model_copy(update={"web": web, "upstream": upstream, "broker": broker})


def _assignment_problems(settings: Settings, bad_recipes: set[str], src: str) -> list[str]:
    problems = []
    for i, zone in enumerate(settings.zones):
        if zone.recipe is not None and zone.recipe in bad_recipes:
            continue  # the recipe itself is already reported
        try:
            assignment_for(zone.recipe, zone.recipe_start, settings.recipes, f"zones.{i}")
        except RecipeError as exc:
            problems.append(f"{exc} ({src})")
    return problems


def _parse_sections(data: Mapping[str, object], src: str) -> tuple[dict[str, object], list[str], set[str]]:
    """Parse the domain sections (water cycles, recipes, automation) once, collecting every problem.

    Returns ``data`` with those sections replaced by their parsed objects (a broken one by its empty
    default, so the rest of the config is still checked and all problems are reported together), the
    problems, and the names of the recipes that failed.
    """
    out = dict(data)
    problems: list[str] = []
    zones = out.get("zones")
    if isinstance(zones, list):
        out["zones"] = zones = [dict(z) if isinstance(z, dict) else z for z in zones]
        for i, zone in enumerate(zones):
            if isinstance(zone, dict) and "water_cycle" in zone:
                try:
                    zone["water_cycle"] = _water_cycle(zone["water_cycle"])
                except ConfigError as exc:
                    problems.append(f"zones.{i}.{exc} ({src})")
                    zone["water_cycle"] = None
    bad_recipes: set[str] = set()
    recipes = out.get("recipes")
    if isinstance(recipes, dict):
        parsed: dict[str, Recipe] = {}
        for name, body in recipes.items():
            try:
                parsed[name] = _recipes({name: body})[name]
            except RecipeError as exc:
                problems.append(f"{exc} ({src})")
                bad_recipes.add(name)
        out["recipes"] = parsed
    if "automation" in out:
        try:
            out["automation"] = _automation(out["automation"])
        except ValueError as exc:  # AutomationConfigError, or a dosing value its own checks refuse
            problems.append(f"{exc} ({src})")
            out["automation"] = AutomationConfig()
    return out, problems, bad_recipes


def settings_from_mapping(data: Mapping[str, object], source: str = "<built-in>") -> Settings:
    """Validate a parsed config mapping (TOML tables) into Settings."""
    data, problems, bad_recipes = _parse_sections(data, source)
    try:
        settings = Settings.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise SettingsError(problems + _format_errors(exc, source)) from exc
    return _resolve_secrets(settings, problems, bad_recipes)


def load_settings(path: Path, overrides: Mapping[str, object] | None = None) -> Settings:
    """Read and validate a TOML config file; ``overrides`` are dotted keys from the command line."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError([f"<file>: cannot read {path}: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"<toml>: {exc} ({path})"]) from exc
    return settings_from_mapping(apply_overrides(data, overrides or {}), str(path))


def apply_overrides(data: Mapping[str, object], overrides: Mapping[str, object]) -> dict[str, object]:
    """Return a copy of ``data`` with dotted-key overrides applied (``broker.port`` → data['broker']['port'])."""
    result: dict[str, object] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        table = result.setdefault(section, {})
        if not isinstance(table, dict):  # a scalar where a table belongs: pydantic names it
            continue
        table[key] = value
    return result


def env_log_level(default: str) -> str:
    """Log level from HYDRO_GATEWAY_LOG_LEVEL, if set."""
    return os.environ.get("HYDRO_GATEWAY_LOG_LEVEL", default)
