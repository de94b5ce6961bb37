#!/usr/bin/env bash
# End-to-end deployment check on really booted systemd Debian (docs/deploy.md, "End-to-end check"):
# the SD card path (provision -> boot -> first boot -> checks from outside), the Ansible fleet path
# (install, changed=0 rerun, rolling update, broken release rolled back) and the arm64 boot under
# qemu-user-static. Needs root; takes ≈ 8 minutes once the root file systems are cached (in
# /var/cache/hydro-deploy-e2e). Not part of scripts/test.sh; CI runs it with HYDRO_DEPLOY_E2E=1.
# Usage: sudo scripts/deploy-e2e.sh [--only card|fleet|arm64 ...] [--no-arm64] [--fleet-size N]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "deploy-e2e: run as root (systemd-nspawn, overlay mounts, veth links)" >&2
  exit 1
fi
scripts/setup.sh e2e
exec nice -n 10 env PYTHONPATH="$PWD" .venv/bin/python scripts/deploy_e2e.py "$@"
