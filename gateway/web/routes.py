"""The aiohttp application of the local web: every route module, security headers, static files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.web import actions, api, commands_api, ingest_api, login, manual, metrics_api, pages
from gateway.web.context import STATE_KEY, WebState
from gateway.web.ingest_api import MAX_INGEST_BODY
from gateway.web.ratelimit import FailureLimiter
from gateway.web.sessions import SessionStore
from gateway.web.templating import PageTemplates

if TYPE_CHECKING:
    from gateway.web.context import WebServices

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Everything (script, style, charts) comes from the gateway itself; no inline script, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _harden(resp: web.StreamResponse) -> None:
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("X-Frame-Options", "DENY")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add the security headers to every answer, errors and redirects included."""
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        _harden(exc)
        raise
    _harden(resp)
    return resp


def build_app(services: WebServices) -> web.Application:
    """Create the aiohttp application."""
    app = web.Application(client_max_size=MAX_INGEST_BODY, middlewares=[security_headers])
    templates = PageTemplates(services.settings.gateway.timezone)
    app[STATE_KEY] = WebState(
        services=services,
        sessions=SessionStore(services.clock.monotonic),
        limiter=FailureLimiter(services.clock.monotonic, on_lockout=lambda _key: services.metrics.web_lockouts.inc()),
        templates=templates,
    )
    for module in (api, ingest_api, commands_api, actions, manual, metrics_api, pages, login):
        module.add_routes(app)
    static = app.router.add_static("/static", _static_dir(), name="static", append_version=True)

    def static_url(filename: str) -> str:
        # The version query changes with the file's content, so browsers never run a stale script.
        return str(static.url_for(filename=filename))

    templates.set_global("static", static_url)
    return app


def _static_dir() -> Path:
    return Path(str(resources.files("gateway.web").joinpath("static")))
