"""Login and logout of the admin in a browser: a session cookie (HttpOnly, SameSite=Strict)."""

from __future__ import annotations

from aiohttp import web

from gateway.web.actions import safe_next
from gateway.web.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    credential_key,
    current_session,
    same_origin,
    secrets_equal,
)
from gateway.web.context import state
from gateway.web.pages import render


async def login_form(request: web.Request) -> web.Response:
    """GET /login?next=/alerts."""
    nxt = safe_next(request.query.get("next"))
    return await render(request, "login.html", title="Log in", api=None, next=nxt, error=None, username="")


async def login(request: web.Request) -> web.Response:
    """POST /login: admin user name and the admin token; wrong ones count against that credential from this IP."""
    st = state(request)
    form = await request.post()
    nxt = safe_next(form.get("next"))
    if not same_origin(request):
        raise web.HTTPForbidden(text="cross-site login refused")
    user, password = str(form.get("username", ""))[:128], str(form.get("password", ""))
    key = credential_key(request, password, user)
    wait = st.limiter.retry_after(key)
    if wait is not None:
        st.services.metrics.web_locked_refusals.inc()
        resp = await _page(request, nxt, "Too many failed attempts. Try again in a minute.", 429, user)
        resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return resp
    cfg = st.services.settings.web
    if not cfg.admin_token:
        return await _page(request, nxt, "Login is disabled: no admin token is configured.", 403, user)
    # Both compared in full so a wrong user name costs the same time as a wrong password.
    ok_user = secrets_equal(user, cfg.admin_user)
    ok_password = secrets_equal(password, cfg.admin_token)
    if not (ok_user and ok_password):
        st.limiter.failure(key)
        st.services.metrics.web_auth_failures.labels(via="login").inc()
        return await _page(request, nxt, "Wrong user name or password.", 401, user)
    st.limiter.success(key)
    st.sessions.drop(request.cookies.get(SESSION_COOKIE))
    session = st.sessions.create(cfg.admin_user)
    session.flash = f"Logged in as {session.user}."
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(SESSION_COOKIE, session.sid, httponly=True, samesite="Strict", path="/", secure=request.secure)
    raise resp


async def logout(request: web.Request) -> web.Response:
    """POST /logout (with the CSRF token, so another site cannot log the operator out)."""
    st = state(request)
    form = await request.post()
    session = current_session(request)
    if session is not None:
        if not secrets_equal(str(form.get(CSRF_FIELD, "")), session.csrf_token):
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
        st.sessions.drop(session.sid)
    resp = web.HTTPSeeOther("/")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


async def _page(request: web.Request, nxt: str, error: str, status: int, username: str) -> web.Response:
    resp = await render(request, "login.html", title="Log in", api=None, next=nxt, error=error, username=username)
    resp.set_status(status)
    return resp


def add_routes(app: web.Application) -> None:
    """Register login and logout."""
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
