"""Fewer glibc malloc arenas: the gateway's few threads do not need one each, and a Pi's RAM is small.

glibc gives every thread that allocates concurrently an arena of its own (up to 8 per core); each keeps the
memory its thread freed. The gateway allocates almost only on the event-loop thread, with short bursts on
aiosqlite's worker and the executor threads, so two arenas suffice (the ingest benchmark measured 1–2 MB
less peak RSS with the cap). Same effect as ``MALLOC_ARENA_MAX=2``, set before any thread starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; False (and nothing changed) on a libc without ``mallopt``."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return ok
