"""aiohttp server lifecycle for the gateway's web side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.web.routes import build_app

if TYPE_CHECKING:
    from gateway.app import Gateway


class WebServer:
    """Runs the aiohttp app on the configured host/port inside the gateway's loop."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        app = build_app(self._gateway)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        cfg = self._gateway.settings.web
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        return int(sockets[0].getsockname()[1]) if sockets else cfg.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
