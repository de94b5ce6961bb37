"""Helpers for the sync tests: an in-process reference receiver on real PostgreSQL, clock driving."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from gateway.clock import ManualClock
from sync.receiver.admission import AdmissionLimits
from sync.receiver.app import STATE, make_app
from sync.receiver.faults import Faults

TOKEN = "gw-secret-token"
ADMIN = "admin-secret-token"
GATEWAY = "gw-test"


class RunningReceiver:
    """The reference receiver served on a real 127.0.0.1 socket inside the test's loop."""

    def __init__(self, dsn: str, gateway: str = GATEWAY, ssl_context: ssl.SSLContext | None = None,
                 limits: AdmissionLimits | None = None) -> None:
        self.dsn = dsn
        self.limits = limits
        self.gateway = gateway
        self.ssl_context = ssl_context
        self.faults = Faults()
        self.faults.update({"seed": 1234})
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.pg: asyncpg.Pool | None = None

    @property
    def url(self) -> str:
        """Base URL for UpstreamClient."""
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve (again on the same port after ``stop``)."""
        self.app = make_app(self.dsn, TOKEN, admin_token=ADMIN, faults=self.faults, limits=self.limits)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self.pg is None:
            self.pg = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)

    async def stop(self) -> None:
        """Stop serving: connections are refused from now on."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        """Stop and close the test's own pool."""
        await self.stop()
        if self.pg is not None:
            await self.pg.close()

    @property
    def stats(self) -> dict[str, int]:
        """Request counters of the receiver."""
        assert self.app is not None
        return dict(self.app[STATE].stats)

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call an admin endpoint."""
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as s, \
                s.request(method, self.url + path, json=body) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json()

    async def seqs(self, stream: str, gateway: str | None = None) -> list[int]:
        """Stored seqs of a stream, in order."""
        assert self.pg is not None
        gateway = gateway or self.gateway
        if stream == "telemetry":
            rows = await self.pg.fetch(
                "SELECT seq FROM telemetry_samples WHERE gateway_id = $1 ORDER BY seq", gateway)
        else:
            rows = await self.pg.fetch(
                "SELECT seq FROM stream_items WHERE gateway_id = $1 AND stream = $2 ORDER BY seq", gateway, stream)
        return [r["seq"] for r in rows]

    async def items(self, stream: str, gateway: str | None = None) -> list[dict[str, Any]]:
        """Stored rows (dicts) of a stream, in seq order."""
        assert self.pg is not None
        gateway = gateway or self.gateway
        if stream == "telemetry":
            rows = await self.pg.fetch(
                "SELECT * FROM telemetry_samples WHERE gateway_id = $1 ORDER BY seq", gateway)
        else:
            rows = await self.pg.fetch(
                "SELECT * FROM stream_items WHERE gateway_id = $1 AND stream = $2 ORDER BY seq", gateway, stream)
        return [dict(r) for r in rows]


async def drive(
    clock: ManualClock,
    predicate: Callable[[], Awaitable[bool] | bool],
    *,
    step: float = 1.0,
    real_timeout: float = 30.0,
) -> None:
    """Advance the manual clock in steps, letting real I/O run, until ``predicate`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + real_timeout
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await clock.advance(step)
        await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def running(service: Any, **kwargs: Any) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``service.run(**kwargs)`` as a task for the duration of the block."""
    task = asyncio.create_task(service.run(**kwargs))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0) -> None:
    """Wait in real time (no clock movement) until ``predicate`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def settle(seconds: float = 0.05) -> None:
    """Give real sockets a moment (used only to prove that nothing happens)."""
    await asyncio.sleep(seconds)


def make_test_ca(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (openssl CLI) and a server context for 127.0.0.1 signed by it; returns (ca.pem, ctx)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=hydro test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(directory / "server.pem", directory / "server.key")
    return directory / "ca.pem", ctx
