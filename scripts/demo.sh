#!/usr/bin/env bash
# Set up and run the demo: a simulated greenhouse on fake hardware, status page on http://127.0.0.1:8080
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh runtime
exec .venv/bin/hydro-gateway demo "$@"
