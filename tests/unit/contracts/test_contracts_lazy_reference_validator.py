"""jsonschema is loaded only to explain a rejected payload: a gateway with well-behaved nodes never carries it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import gateway.compose
from firmware_contracts.validate import decode_and_validate
heavy = ("jsonschema", "referencing")
payload, failure = decode_and_validate("telemetry", b'[{"metric_type": "ph", "value": 6.1, "ts": 1767225600}]')
assert payload is not None and failure is None
print(sorted(m for m in heavy if m in sys.modules))
payload, failure = decode_and_validate("telemetry", b'{"metric_type": "ph", "value": "six"}')
print(failure.code.value, "|", failure.message)
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_valid_payloads_do_not_load_jsonschema_and_a_failure_is_still_explained() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    before, failure, after = out.strip().splitlines()
    assert before == "[]"
    code, _, message = failure.partition(" | ")
    assert code == "schema" and "value" in message and "'six'" in message
    assert after == "['jsonschema', 'referencing']"
