"""Shared fixtures: free ports, a running in-process gateway, real paho MQTT nodes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import traceback
import tracemalloc
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.compose import build_gateway
from gateway.settings import Settings, settings_from_mapping

pytest_plugins = ["tests.fakes.postgres", "pytester"]

# ---- no hidden async bugs -------------------------------------------------------------------------
# Every event loop a test creates reports to this list instead of only logging: a task whose exception
# was never retrieved, a callback that raised, a task destroyed while pending… each fails the test.
_loop_errors: list[str] = []


def _record_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    parts = [str(context.get("message", "event loop error"))]
    for key in ("task", "future", "handle", "transport", "protocol"):
        if key in context:
            parts.append(f"{key}={context[key]!r}")
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        parts.append("".join(traceback.format_exception(exc)).rstrip())
    _loop_errors.append("\n  ".join(parts))
    loop.default_exception_handler(context)  # still logged as usual


class _CheckedLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy whose loops record what reaches their exception handler."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.set_exception_handler(_record_loop_error)
        return loop


_POLICY = _CheckedLoopPolicy()


def pytest_configure(config: pytest.Config) -> None:
    """Install the checking policy before pytest-asyncio reads it (its ``event_loop_policy`` fixture
    returns the global policy), so test loops, and ``asyncio.run`` in a sync test or a thread, use it."""
    asyncio.set_event_loop_policy(_POLICY)


def _describe_leak(w: warnings.WarningMessage) -> str:
    """The warning, plus where the leaked object was allocated when PYTHONTRACEMALLOC is set."""
    text = f"{w.category.__name__}: {w.message}"
    where = tracemalloc.get_object_traceback(w.source) if w.source is not None else None
    if where is not None:
        text += "\n    allocated at:\n      " + "\n      ".join(where.format())
    return text


@pytest.fixture(autouse=True)
def no_hidden_async_errors() -> Iterator[None]:
    """Fail the test on any error its loops reported and on any unclosed transport, socket or file.

    Torn down after the test's event loop is closed (autouse fixtures are set up first); a collection
    pass makes objects still in reference cycles report now, against the test that leaked them.
    ResourceWarnings raised while the test runs are errors already (filterwarnings = error, and
    warnings raised in ``__del__`` reach pytest as unraisable exceptions, which are not ignored).
    """
    _loop_errors.clear()
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    problems = list(_loop_errors)
    problems += [_describe_leak(w) for w in caught if issubclass(w.category, ResourceWarning)]
    _loop_errors.clear()
    if problems:
        pytest.fail("hidden async errors / leaked resources:\n- " + "\n- ".join(problems), pytrace=False)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ADMIN_TOKEN = "test-admin-token"


def base_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A small two-zone greenhouse config for tests (demo mode: anonymous MQTT allowed)."""
    cfg: dict[str, Any] = {
        "gateway": {"id": "gw-test", "greenhouse_uid": "gh1", "mode": "demo", "data_dir": str(tmp_path / "data")},
        "broker": {"host": "127.0.0.1", "port": free_port(), "allow_anonymous": True},
        "web": {"host": "127.0.0.1", "port": free_port(), "admin_token": ADMIN_TOKEN},
        "ingest": {"flush_interval_ms": 50},
        # No pre-allocated reserve per test gateway (hundreds of them would hold GBs of /tmp); the disk-full
        # tests set one.
        "storage": {"reserve_bytes": 0},
        "zones": [{"uid": "zone-a", "name": "Zone A"}, {"uid": "zone-b", "name": "Zone B"}],
        "nodes": [
            {"hardware_id": "esp32-aa01", "uid": "nd-ph-1", "zone": "zone-a", "node_type": "ph"},
            {"hardware_id": "esp32-aa02", "uid": "nd-water-1", "zone": "zone-a", "node_type": "water"},
            {"hardware_id": "esp32-bb01", "uid": "nd-ph-2", "zone": "zone-b", "node_type": "ph"},
        ],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@contextlib.asynccontextmanager
async def run_gateway(settings: Settings, **kwargs: Any) -> AsyncIterator[Gateway]:
    """Run a gateway in this loop until the block exits."""
    gateway = await build_gateway(settings, **kwargs)
    task = asyncio.create_task(gateway.run())
    ready = asyncio.create_task(gateway.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready in done, "gateway did not become ready within 60 s"
        yield gateway
    finally:
        # also when start-up failed: a gateway left running leaks its sockets and database into later tests
        ready.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build Settings from the base test config with section overrides."""

    def make(**sections: Any) -> Settings:
        return settings_from_mapping(base_config(tmp_path, **sections), "<test>")

    return make


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an (async or sync) predicate until it returns truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
