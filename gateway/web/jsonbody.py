"""JSON request bodies parsed with a size and nesting-depth limit: any bad body is a 400 with the reason, never a 500.

``json.loads`` recurses once per nesting level, so ``[`` × 100 000 raised RecursionError (a 500). The depth is
measured on the raw text first (strings removed, then the brackets counted), which costs one linear pass.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import NoReturn

from aiohttp import web

MAX_DEPTH = 32
DEFAULT_MAX_BYTES = 1024 * 1024

# A string, or an unterminated one up to the end (possessive, so a body of unclosed quotes stays linear).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class BadJsonBody(ValueError):
    """The body is not acceptable JSON; ``reason`` is a short machine code, ``detail`` the human text."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def nesting_depth(text: str) -> int:
    """Deepest array/object nesting of a JSON text (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    return max(accumulate(_STEP[c] for c in brackets))


def loads_limited(raw: bytes | str, max_depth: int = MAX_DEPTH) -> object:
    """Decode JSON, refusing NaN/Infinity and nesting deeper than ``max_depth``; raises BadJsonBody."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError as exc:
        raise BadJsonBody("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise BadJsonBody("too_deep", f"JSON nested {depth} levels deep, at most {max_depth} allowed")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # a depth the scan missed (it cannot, but a 500 must never happen)
        raise BadJsonBody("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:
        raise BadJsonBody("malformed_json", str(exc)[:200]) from None


async def read_json(
    request: web.Request, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = MAX_DEPTH
) -> object:
    """The request's JSON body, unchecked (callers narrow it); a JSON 400 (413 when too large) names the reason."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _error(web.HTTPRequestEntityTooLarge, "too_large", f"body over {max_bytes} bytes", max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(65536):
            size += len(chunk)
            if size > max_bytes:  # chunked bodies have no Content-Length: stop reading at the limit
                raise _error(web.HTTPRequestEntityTooLarge, "too_large", f"body over {max_bytes} bytes", max_bytes)
            chunks.append(chunk)
    except (ValueError, ConnectionError) as exc:
        raise _error(web.HTTPBadRequest, "unreadable_body", str(exc)[:200]) from None
    raw = b"".join(chunks)
    try:
        return loads_limited(raw, max_depth)
    except BadJsonBody as exc:
        raise _error(web.HTTPBadRequest, exc.reason, exc.detail) from None


def _error(exc_type: type[web.HTTPException], reason: str, detail: str, max_size: int = 0) -> web.HTTPException:
    body = {"status": "error", "error": reason, "detail": detail}
    if exc_type is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(
            max_size=max_size, actual_size=max_size + 1, text=json.dumps(body), content_type="application/json"
        )
    return exc_type(text=json.dumps(body), content_type="application/json")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")
