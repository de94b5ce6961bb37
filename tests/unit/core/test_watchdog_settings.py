"""Production needs the external watchdog's heartbeat pin unless the config declares none is fitted (issue 13)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.settings import Settings, SettingsError

RELAYS = [
    {"name": "a-recirc", "zone": "zone-a", "pin": 17, "fail_safe_mode": "NC", "relay_logic": "active_open"},
    {"name": "a-drain", "zone": "zone-a", "pin": 27, "fail_safe_mode": "NO", "relay_logic": "active_close"},
]
PRODUCTION: dict[str, Any] = {"gateway": {"mode": "production"}, "broker": {"allow_anonymous": False}}


def _hardware(**watchdog: Any) -> dict[str, Any]:
    return {"hardware": {"backend": "sim", "relays": RELAYS, "watchdog": watchdog}}


def test_production_relays_without_heartbeat_pin_are_refused(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError) as err:
        make_settings(**PRODUCTION, **_hardware(timeout_s=2.0))
    problems = err.value.problems
    assert any(
        line.startswith("hardware.watchdog.heartbeat_pin: required in production")
        and "external_watchdog = false" in line
        for line in problems
    ), problems


def test_production_with_heartbeat_pin_has_an_external_watchdog(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(**PRODUCTION, **_hardware(heartbeat_pin=26))
    assert not settings.no_external_watchdog
    assert settings.hardware.watchdog.external_fitted


def test_declaring_no_external_watchdog_is_accepted_and_flagged(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(**PRODUCTION, **_hardware(external_watchdog=False))
    assert settings.no_external_watchdog  # the gateway raises infra_no_external_watchdog (warning) at start
    cfg = settings.hardware.watchdog
    assert cfg.external_watchdog is False and not cfg.external_fitted


def test_demo_needs_no_heartbeat_pin(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(**_hardware())
    assert settings.is_demo and not settings.no_external_watchdog


def test_production_without_gateway_relays_needs_no_heartbeat_pin(make_settings: Callable[..., Settings]) -> None:
    """No coil on the gateway: there is nothing for a dead-man circuit to drop."""
    settings = make_settings(**PRODUCTION)
    assert settings.hardware.watchdog.heartbeat_pin is None and not settings.hardware.relays


@pytest.mark.parametrize(
    ("watchdog", "message"),
    [
        ({"heartbeat_pin": 26, "external_watchdog": False}, "heartbeat_pin is set but external_watchdog = false"),
        ({"external_watchdog": True}, "external_watchdog = true needs the heartbeat_pin"),
    ],
)
def test_contradictory_watchdog_declarations_are_refused(
    make_settings: Callable[..., Settings], watchdog: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        make_settings(**_hardware(**watchdog))
    assert any(line.startswith("hardware.watchdog") and message in line for line in err.value.problems)
