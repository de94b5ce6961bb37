"""Who may do what: reads may be public on the LAN; every action needs the admin.

The admin proves itself with the bearer token (API clients) or a login session (browsers). A session
action must also carry the session's CSRF token (header or form field) and, when the browser sends an
Origin, come from this very site. Wrong credentials count against the credential tried and the client IP
together: over the limit that credential gets 429 from that IP, while the right one is never refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.web.context import state
from gateway.web.sessions import Session

SESSION_COOKIE = "hg_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and the name actions are recorded under."""

    user: str
    via: str  # "token" | "session"
    session: Session | None = None

    @property
    def by(self) -> str:
        """How zone events and resolved alerts name who did it."""
        return f"{self.user} (api token)" if self.via == "token" else f"{self.user} (web)"


def secrets_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())


def client_key(request: web.Request) -> str:
    """The peer address (no proxy sits in front of the gateway)."""
    return request.remote or "unknown"


def credential_key(request: web.Request, secret: str, user: str = "") -> str:
    """The lockout key: client IP plus a digest of the credential tried (the secret itself is never kept)."""
    digest = hashlib.sha256(f"{user}\0{secret}".encode()).hexdigest()[:24]
    return f"{client_key(request)} {digest}"


def presented_bearer(request: web.Request) -> str | None:
    """The bearer token in the Authorization header, if any."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current_session(request: web.Request) -> Session | None:
    """The live login session of this browser, if any."""
    return state(request).sessions.get(request.cookies.get(SESSION_COOKIE))


def json_error(exc_type: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    """An HTTP error with a JSON body ``{"error": message}``."""
    return exc_type(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


def check_rate_limit(request: web.Request, key: str) -> None:
    """Raise 429 while this credential from this client is over its wrong-credential budget."""
    st = state(request)
    wait = st.limiter.retry_after(key)
    if wait is not None:
        st.services.metrics.web_locked_refusals.inc()
        raise json_error(web.HTTPTooManyRequests, "too many failed logins, try later", **{"Retry-After": _secs(wait)})


def _bearer_principal(request: web.Request, token: str) -> Principal:
    st = state(request)
    key = credential_key(request, token)
    check_rate_limit(request, key)
    expected = st.services.settings.web.admin_token
    if expected and secrets_equal(token, expected):
        st.limiter.success(key)
        return Principal(st.services.settings.web.admin_user, "token")
    st.limiter.failure(key)
    st.services.metrics.web_auth_failures.labels(via="token").inc()
    raise json_error(web.HTTPUnauthorized, "wrong admin token", **{"WWW-Authenticate": 'Bearer realm="hydro-gateway"'})


def authenticate(request: web.Request) -> Principal | None:
    """Bearer token or session, without CSRF checks (for reads); None when anonymous."""
    token = presented_bearer(request)
    if token is not None:
        return _bearer_principal(request, token)
    session = current_session(request)
    return Principal(session.user, "session", session) if session is not None else None


def require_read(request: web.Request) -> None:
    """Reads are open when ``web.public_read``; otherwise they need the admin as for actions."""
    if state(request).services.settings.web.public_read:
        return
    if authenticate(request) is None:
        raise _unauthorized()


def require_admin(request: web.Request, form: Mapping[str, Any] | None = None) -> Principal:
    """The admin for an action, or 401/403/429; ``form`` is the posted form of an HTML action."""
    token = presented_bearer(request)
    if token is not None:
        return _bearer_principal(request, token)
    session = current_session(request)
    if session is None:
        raise _unauthorized()
    if not same_origin(request):
        raise json_error(web.HTTPForbidden, "cross-site request refused")
    given = request.headers.get(CSRF_HEADER) or (str(form.get(CSRF_FIELD, "")) if form is not None else "")
    if not given or not secrets_equal(given, session.csrf_token):
        raise json_error(web.HTTPForbidden, "missing or wrong CSRF token")
    return Principal(session.user, "session", session)


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site (Origin or Referer host differs)."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return True  # not a browser, or one that strips both; the CSRF token still has to match
    if origin == "null":
        return False
    return urlsplit(origin).netloc == request.host


def _unauthorized() -> web.HTTPException:
    return json_error(
        web.HTTPUnauthorized, "login or admin token required", **{"WWW-Authenticate": 'Bearer realm="hydro-gateway"'}
    )


def _secs(wait: float) -> str:
    return str(max(1, int(wait + 0.999)))
