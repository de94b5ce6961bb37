"""Start-up checks of the upstream settings (the lead's settings module calls this in production)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urlsplit

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_upstream_settings(url: str | None, token: str | None, ca_file: Path | None) -> list[str]:
    """Problems with the upstream settings, each naming its key; empty when sync can start.

    No URL means sync is disabled, which is allowed. A URL without a token is the seed system's silent
    401 (seed 000 §2) and is refused here instead. Plain http is only accepted to a loopback address,
    because the bearer token would otherwise cross the network in clear text.
    """
    problems: list[str] = []
    if not url:
        if ca_file is not None:
            problems.append("upstream.ca_file: set but upstream.url is not")
        return problems
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        problems.append(f"upstream.url: must start with https:// (got {url!r})")
    elif not parts.hostname:
        problems.append(f"upstream.url: no host in {url!r}")
    elif parts.scheme == "http" and not _is_loopback(parts.hostname):
        problems.append("upstream.url: plain http is only allowed to localhost; use https://")
    if parts.query or parts.fragment:
        problems.append("upstream.url: must not contain a query or fragment")
    if token is None or not token.strip():
        problems.append("upstream.token_file: required when upstream.url is set")
    elif any(ch.isspace() for ch in token.strip()) or not token.strip().isprintable():
        problems.append("upstream.token_file: the token contains whitespace or control characters")
    if ca_file is not None:
        if not ca_file.is_file():
            problems.append(f"upstream.ca_file: {ca_file} does not exist")
        else:
            try:
                ssl.create_default_context(cafile=str(ca_file))
            except (ssl.SSLError, OSError, ValueError) as exc:
                problems.append(f"upstream.ca_file: {ca_file} is not a readable PEM CA bundle ({exc})")
    return problems
