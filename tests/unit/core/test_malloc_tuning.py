"""The malloc arena cap is applied on glibc (Raspberry Pi OS, Debian) and is a no-op elsewhere."""

from __future__ import annotations

import platform

import pytest

from gateway import malloc_tuning


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is a glibc feature")
def test_arenas_are_capped_on_glibc() -> None:
    assert malloc_tuning.limit_malloc_arenas(2) is True


def test_without_a_c_library_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(malloc_tuning.ctypes.util, "find_library", lambda name: None)
    assert malloc_tuning.limit_malloc_arenas(2) is False
