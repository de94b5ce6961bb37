"""The page templates are compiled on the first page request, once, in a worker thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

from gateway.web import templating
from gateway.web.templating import PageTemplates

ROOT = Path(__file__).resolve().parents[3]


def test_starting_the_web_app_does_not_import_jinja2() -> None:
    # A headless gateway never pays for jinja2 and the compiled templates (~5.7 MB RSS).
    code = ("import sys; import gateway.web.routes, gateway.web.server; "
            "print('jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


async def test_concurrent_first_pages_share_one_build_made_off_the_loop(monkeypatch) -> None:
    builds: list[str] = []
    real = templating.make_environment

    def counting(tz: str):  # type: ignore[no-untyped-def]
        builds.append(threading.current_thread().name)
        return real(tz)

    monkeypatch.setattr(templating, "make_environment", counting)
    pages = PageTemplates("Europe/Berlin")
    pages.set_global("static", lambda name: f"/static/{name}?v=1")
    assert not pages.built
    envs = await asyncio.gather(*(pages.environment() for _ in range(5)))
    assert pages.built and all(env is envs[0] for env in envs)
    assert len(builds) == 1 and builds[0] != threading.main_thread().name
    assert envs[0].globals["static"]("app.js") == "/static/app.js?v=1"
    pages.set_global("later", len)  # set after the build: still reaches the environment
    assert envs[0].globals["later"] is len
    assert envs[0].filters["age"](125) == "2 min"
