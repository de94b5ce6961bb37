"""Helpers for the web tests: an HTTP client that keeps cookies like a browser, real MQTT nodes."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_TOKEN, eventually
from tests.fakes.paho_node import PahoNode

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HELLOS = {
    "nd-ph-1": {"hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"},
    "nd-water-1": {"hardware_id": "esp32-aa02", "node_type": "water", "fw_version": "2.1.0"},
    "nd-ph-2": {"hardware_id": "esp32-bb01", "node_type": "ph", "fw_version": "1.0.1"},
}


@dataclass
class Reply:
    """What came back: status, headers and body text."""

    status: int
    headers: Any
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def csrf(self) -> str:
        """The CSRF token the page hands to its script ('' when logged out)."""
        match = re.search(r'"csrf": "([^"]*)"', self.text)
        assert match, "page has no ui-config"
        return match.group(1)


class Browserish:
    """aiohttp with a cookie jar: enough of a browser to log in and post forms."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.http = session

    async def request(self, method: str, path: str, **kw: Any) -> Reply:
        kw.setdefault("allow_redirects", False)
        async with self.http.request(method, self.base + path, **kw) as resp:
            return Reply(resp.status, resp.headers, await resp.text())

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        return await self.request("POST", path, **kw)

    async def login(self, password: str = ADMIN_TOKEN, user: str = "admin", next_: str = "/") -> Reply:
        return await self.post("/login", data={"username": user, "password": password, "next": next_})

    def cookie(self, name: str) -> str | None:
        for c in self.http.cookie_jar:
            if c.key == name:
                return c.value
        return None


@pytest.fixture
def client() -> Callable[..., Any]:
    """``async with client(gw) as c``: a cookie-keeping HTTP client; ``source_ip`` picks the loopback address."""

    @asynccontextmanager
    async def make(gw: Any, source_ip: str = "127.0.0.1") -> AsyncIterator[Browserish]:
        # unsafe=True: aiohttp's jar otherwise ignores cookies set by an IP-address host.
        jar = aiohttp.CookieJar(unsafe=True)
        connector = aiohttp.TCPConnector(local_addr=(source_ip, 0))
        async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as http:
            yield Browserish(f"http://127.0.0.1:{gw.web_port}", http)

    return make


@pytest.fixture
def nodes() -> Callable[..., Any]:
    """``async with nodes(gw, "nd-ph-1", …) as by_uid``: real paho nodes that said hello and are registered."""

    @asynccontextmanager
    async def make(gw: Any, *uids: str) -> AsyncIterator[dict[str, PahoNode]]:
        made: dict[str, PahoNode] = {}
        try:
            for uid in uids:
                node = PahoNode(uid, gw.services.broker.port)
                await asyncio.to_thread(node.connect)
                await asyncio.to_thread(node.publish, "hydro/node_hello", {"message_type": "node_hello", **HELLOS[uid]})
                made[uid] = node
            for uid in uids:
                await eventually(lambda uid=uid: gw.services.registry.get(uid))
            yield made
        finally:
            for node in made.values():
                node.close()

    return make


@pytest.fixture
def demo_settings(tmp_path: Any) -> Any:
    """The demo greenhouse's settings on free ports in tmp_path (run with ``run_gateway(s, simulate=True)``)."""
    from gateway.settings import apply_overrides, settings_from_mapping
    from gateway.sim.demo import demo_config
    from tests.conftest import free_port

    data = apply_overrides(demo_config(tmp_path / "demo"), {"broker.port": free_port(), "web.port": free_port()})
    return settings_from_mapping(data, "<demo>")
