"""aiohttp server lifecycle for the gateway's web side."""

from __future__ import annotations

from aiohttp import web

from gateway.web.context import WebServices
from gateway.web.routes import build_app


class WebServer:
    """Runs the aiohttp app on the configured host/port inside the gateway's loop."""

    def __init__(self, services: WebServices) -> None:
        self._services = services
        self._runner: web.AppRunner | None = None

    @property
    def services(self) -> WebServices:
        """What the web side was given."""
        return self._services

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        app = build_app(self._services)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        cfg = self._services.settings.web
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
