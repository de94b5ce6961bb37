"""Per-app state of the web side (gateway, sessions, limiter, templates) and how handlers reach it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import jinja2
from aiohttp import web

from gateway.web.ratelimit import FailureLimiter
from gateway.web.sessions import SessionStore

if TYPE_CHECKING:
    from gateway.app import Gateway


@dataclass
class WebState:
    """Everything the handlers share; one per aiohttp application."""

    gateway: Gateway
    sessions: SessionStore
    limiter: FailureLimiter
    templates: jinja2.Environment


STATE_KEY = web.AppKey("web_state", WebState)


def state(request: web.Request) -> WebState:
    """The web state of this request's application."""
    return request.app[STATE_KEY]


def gw(request: web.Request) -> Gateway:
    """The Gateway behind this request."""
    return request.app[STATE_KEY].gateway
