#!/usr/bin/env bash
# Set up everything the gateway needs on Debian / Raspberry Pi OS with Python >= 3.11:
# system packages (only the missing ones), a virtualenv in .venv, the project with its test extras.
# Usage: scripts/setup.sh [runtime|test|e2e]   (e2e: test + what scripts/deploy-e2e.sh needs)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"

need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
python_bin="${PYTHON:-python3}"
"$python_bin" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "Python >= 3.11 is required (found $("$python_bin" --version 2>&1))" >&2; exit 1; }
"$python_bin" -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if [ "$profile" = "test" ] || [ "$profile" = "e2e" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
  have_cmd chromium || need_pkgs+=(chromium)
  have_cmd mcopy || need_pkgs+=(mtools)
  have_cmd mkfs.fat || need_pkgs+=(dosfstools)
  have_cmd systemd-analyze || need_pkgs+=(systemd)
  [ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
  have_cmd openssl || need_pkgs+=(openssl)
fi
if [ "$profile" = "e2e" ]; then
  # scripts/deploy-e2e.sh: boot Debian containers, build their root file systems, run arm64 ones.
  have_cmd systemd-nspawn || need_pkgs+=(systemd-container)
  have_cmd mmdebstrap || need_pkgs+=(mmdebstrap)
  have_cmd qemu-aarch64-static || need_pkgs+=(qemu-user-static)
  have_cmd update-binfmts || need_pkgs+=(binfmt-support)
  have_cmd ssh || need_pkgs+=(openssh-client)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "installing system packages: ${need_pkgs[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$profile" = "test" ] || [ "$profile" = "e2e" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
