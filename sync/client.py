"""HTTP client for the upstream contract in ``sync/openapi.yaml`` (one aiohttp session, bearer token)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import aiohttp

_MAX_ERROR_BODY = 4096
MAX_ROWS_HEADER = "X-Max-Batch-Rows"


class Outcome(Enum):
    """What the uplink should do with a batch after one POST."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    RETRY = "retry"  # 5xx, 408, 429, timeout, connection error: back off, same batch again
    REJECTED = "rejected"  # other 4xx: the batch itself is wrong; quarantine after N attempts
    TOO_LARGE = "too_large"  # 413: send fewer rows
    DENIED = "denied"  # 401/403/404/410: the gateway is refused, not the batch; never quarantine
    CONFLICT = "conflict"  # 409: the sequence numbers hold other data upstream; never a success


@dataclass(frozen=True)
class BatchResult:
    """Classified response to one batch POST."""

    outcome: Outcome
    status: int | None
    detail: str
    retry_after: str | None = None
    max_rows: int | None = None  # the server's batch size hint (X-Max-Batch-Rows), None when it asks for none

    @property
    def reachable(self) -> bool:
        """An HTTP answer below 500 proves the upstream is reachable."""
        return self.status is not None and self.status < 500


@dataclass(frozen=True)
class ConfigFetch:
    """Result of a conditional config GET: ``config`` is None on 304."""

    status: int
    etag: str | None
    config: dict[str, object] | None


class UpstreamError(Exception):
    """The upstream could not be reached or answered outside the contract."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def make_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate- and hostname-verifying context, optionally trusting a private CA file."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def idempotency_key(gateway_id: str, generation: str, stream: str, first_seq: int, last_seq: int) -> str:
    """``<gateway_id>:<generation>:<stream>:<first_seq>-<last_seq>`` as the contract defines it."""
    return f"{gateway_id}:{generation}:{stream}:{first_seq}-{last_seq}"


def classify(status: int) -> Outcome:
    """Map an HTTP status of a batch POST to an outcome."""
    if 200 <= status < 300:
        return Outcome.STORED
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    if status == 413:
        return Outcome.TOO_LARGE
    if status == 409:
        return Outcome.CONFLICT
    if status in (401, 403, 404, 410):
        return Outcome.DENIED
    if 400 <= status < 500:
        return Outcome.REJECTED
    return Outcome.RETRY  # 1xx/3xx are outside the contract: treat as transient


class UpstreamClient:
    """Talks to the central side; owns one ``aiohttp.ClientSession``. Use as ``async with``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        gateway_id: str,
        *,
        ca_file: Path | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.gateway_id = gateway_id
        self._token = token
        self._ca_file = ca_file
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> UpstreamClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the session (must run inside the event loop)."""
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = (
                make_ssl_context(self._ca_file) if self.base_url.startswith("https") else False
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=16),
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}", "User-Agent": "hydro-gateway-sync/1"},
                auto_decompress=True,
            )

    async def close(self) -> None:
        """Close the session (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session."""
        if self._session is None:
            raise RuntimeError("UpstreamClient is not started")
        return self._session

    def _url(self, *parts: str) -> str:
        tail = "/".join(quote(p, safe="") for p in parts)
        return f"{self.base_url}/v1/gateways/{quote(self.gateway_id, safe='')}/{tail}"

    async def post_batch(self, stream: str, gzip_body: bytes, key: str) -> BatchResult:
        """POST one gzip JSON batch; never raises for network trouble, returns a classified result."""
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Idempotency-Key": key,
        }
        try:
            async with self.session.post(self._url("streams", stream, "batches"), data=gzip_body,
                                         headers=headers) as resp:
                text = (await resp.read())[:_MAX_ERROR_BODY].decode("utf-8", "replace")
                outcome = classify(resp.status)
                if outcome is Outcome.STORED and _is_duplicate(text):
                    outcome = Outcome.DUPLICATE
                return BatchResult(outcome, resp.status, text, resp.headers.get("Retry-After"),
                                   _max_rows(resp.headers.get(MAX_ROWS_HEADER)))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return BatchResult(Outcome.RETRY, None, f"{type(exc).__name__}: {exc}")

    async def stream_marks(self, generation: str) -> dict[str, int] | None:
        """Last sequence stored upstream per stream for ``generation``; None if the upstream does not say.

        Raises UpstreamError when it cannot be asked now (network, 5xx, 429): the caller retries.
        """
        try:
            async with self.session.get(self._url("generations", generation, "streams")) as resp:
                if resp.status in (408, 429) or resp.status >= 500:
                    raise UpstreamError(f"GET stream marks: HTTP {resp.status}", resp.status)
                if resp.status != 200:
                    return None  # an upstream without this endpoint (or refusing it): rely on local marks
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise UpstreamError(f"GET stream marks: {type(exc).__name__}: {exc}") from exc
        streams = doc.get("streams") if isinstance(doc, dict) else None
        if not isinstance(streams, dict):
            return None
        marks: dict[str, int] = {}
        for name, mark in streams.items():
            seq = mark.get("last_seq") if isinstance(mark, dict) else None
            if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0:
                marks[str(name)] = seq
        return marks

    async def get_config(self, etag: str | None) -> ConfigFetch:
        """Conditional GET of the gateway config."""
        headers = {"If-None-Match": etag} if etag else {}
        try:
            async with self.session.get(self._url("config"), headers=headers) as resp:
                if resp.status == 304:
                    return ConfigFetch(304, etag, None)
                if resp.status != 200:
                    raise UpstreamError(f"GET config: HTTP {resp.status}", resp.status)
                return ConfigFetch(200, resp.headers.get("ETag"), await resp.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise UpstreamError(f"GET config: {type(exc).__name__}: {exc}") from exc

    async def pending_commands(self, limit: int = 50) -> list[dict[str, object]]:
        """Commands waiting for this gateway (not yet claimed)."""
        try:
            async with self.session.get(self._url("commands", "pending"), params={"limit": str(limit)}) as resp:
                if resp.status != 200:
                    raise UpstreamError(f"GET pending commands: HTTP {resp.status}", resp.status)
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise UpstreamError(f"GET pending commands: {type(exc).__name__}: {exc}") from exc
        commands = doc.get("commands") if isinstance(doc, dict) else None
        if not isinstance(commands, list):
            raise UpstreamError("GET pending commands: body has no 'commands' list")
        return [c for c in commands if isinstance(c, dict)]

    async def claim_command(self, cmd_id: str) -> bool:
        """Claim a command; True if this gateway holds it (also on a repeated claim), False if it is gone."""
        try:
            async with self.session.post(self._url("commands", cmd_id, "claim")) as resp:
                if resp.status == 200:
                    return True
                if resp.status in (404, 409, 410):
                    return False
                raise UpstreamError(f"POST claim {cmd_id}: HTTP {resp.status}", resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamError(f"POST claim {cmd_id}: {type(exc).__name__}: {exc}") from exc


def _max_rows(value: str | None) -> int | None:
    """A positive row count from the hint header; anything else is ignored."""
    if value is None or not value.strip().isdigit():
        return None
    rows = int(value)
    return rows if rows > 0 else None


def _is_duplicate(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("duplicate") is True
