"""Layers point one way (issue 16): drivers/, sync/ and firmware_contracts/ never import gateway/.

The contracts live in pyproject.toml (``[tool.importlinter]``); this test runs them on every suite run so a
new upward import fails ``scripts/test.sh``, naming the import chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_lower_layers_never_import_the_gateway(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)  # the config is the repository's pyproject.toml
    monkeypatch.syspath_prepend(str(ROOT))  # analyse this checkout, not whatever the venv's editable install points at
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out
    for contract in (
        "drivers never import gateway or sync",
        "sync never imports gateway or drivers",
        "firmware_contracts imports nothing of ours",
    ):
        assert f"{contract} KEPT" in out, out
