#!/usr/bin/env bash
# Set up and run the whole test suite: lint, type check, pytest (a run that collects no tests fails).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
echo "== ruff"
.venv/bin/ruff check gateway drivers firmware_contracts sync tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
set +e
PYTHONASYNCIODEBUG=1 .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
