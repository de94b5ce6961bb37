#!/bin/bash
# hydro-gateway first boot: run once by cloud-init (user-data runcmd) from the boot partition, as root.
# Installs the gateway, moves its secrets off the world-readable FAT partition, applies the SD-wear
# settings and enables the service: the same end state as the Ansible role hydro_gateway.
# Safe to run again by hand after a failure: sudo bash /boot/firmware/hydro-gateway/firstboot.sh
#
# Settings come from install.env beside this script. Tests stage a whole run under a directory with
# HG_ROOT=/tmp/x HG_MANAGE_SYSTEM=0 (no users, packages or systemctl), like the role's test mode.
set -euo pipefail
umask 022

BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# HG_* variables already in the environment override install.env (tests, manual reruns).
env_overrides="$(for v in $(compgen -v HG_ || true); do declare -p "$v"; done)"
# shellcheck source=/dev/null
. "$BUNDLE/install.env"
eval "$env_overrides"
R="${HG_ROOT:-}"
MANAGE_SYSTEM="${HG_MANAGE_SYSTEM:-1}"
CONF="$R/etc/hydro-gateway"
VENV="$R/opt/hydro-gateway/venv"
REBOOT=0

log() { echo "hydro-gateway firstboot: $*"; }

# Move $1 (a temporary file) over $2 if the contents differ; CHANGED says whether they did.
replace_if_changed() {
    CHANGED=0
    if ! cmp -s "$1" "$2"; then
        cat "$1" >"$2"
        CHANGED=1
    fi
    rm -f "$1"
}

# Replace the "# BEGIN/END hydro-gateway" block of $1 with the contents of $2 (or append it), as
# Ansible's blockinfile does with the same markers, so a later rollout sees no change.
set_block() {
    local tmp
    tmp="$(mktemp)"
    awk '$0 == "# BEGIN hydro-gateway" {skip = 1} !skip {print} $0 == "# END hydro-gateway" {skip = 0}' \
        "$1" >"$tmp"
    { echo "# BEGIN hydro-gateway"; cat "$2"; echo "# END hydro-gateway"; } >>"$tmp"
    replace_if_changed "$tmp" "$1"
}

# Apply the sed -E expression $2 to $1 in place.
edit_file() {
    local tmp
    tmp="$(mktemp)"
    sed -E "$2" "$1" >"$tmp"
    replace_if_changed "$tmp" "$1"
}

if [ "$MANAGE_SYSTEM" = 1 ]; then
    log "creating the service user"
    for group in $HG_SUPPLEMENTARY_GROUPS "$HG_GROUP"; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    if ! id -u "$HG_USER" >/dev/null 2>&1; then
        useradd --system --gid "$HG_GROUP" --home-dir /var/lib/hydro-gateway --no-create-home \
            --shell /usr/sbin/nologin "$HG_USER"
    fi
    usermod --append --groups "${HG_SUPPLEMENTARY_GROUPS// /,}" "$HG_USER"
fi

# Secrets first, before anything that can fail (network, pip): they must not stay on the FAT
# partition, which every user can read and the technician's laptop can copy.
log "moving the secrets to $CONF"
install -d -m 0755 -o root -g root "$CONF"
install -m 0644 -o root -g root "$BUNDLE/gateway.toml" "$CONF/gateway.toml"
for secret in upstream_token admin_token mqtt_passwords; do
    if [ -f "$BUNDLE/secrets/$secret" ]; then
        install -m 0640 -o root -g "$HG_GROUP" "$BUNDLE/secrets/$secret" "$CONF/$secret"
        rm -f "$BUNDLE/secrets/$secret"
    elif [ ! -f "$CONF/$secret" ]; then
        log "missing secret $secret (neither in the bundle nor in $CONF)" >&2
        exit 1
    fi
done
rmdir "$BUNDLE/secrets" 2>/dev/null || true

if [ "$HG_IS_RASPBERRY_PI" = 1 ]; then
    log "enabling I2C/UART in $HG_BOOT_DIR/config.txt"
    set_block "$R$HG_BOOT_DIR/config.txt" "$BUNDLE/boot-config.txt"
    if [ "$CHANGED" = 1 ]; then REBOOT=1; fi
    if [ "$HG_ENABLE_SERIAL" = 1 ]; then
        # The UART talks to RS-485 nodes; a login console on it would answer them.
        edit_file "$R$HG_BOOT_DIR/cmdline.txt" 's/console=(serial0|serial1|ttyAMA0|ttyS0),[0-9]+ *//g'
        if [ "$CHANGED" = 1 ]; then REBOOT=1; fi
    fi
    if [ "$HG_ENABLE_I2C" = 1 ]; then
        install -d -m 0755 "$R/etc/modules-load.d"
        echo "i2c-dev" >"$R/etc/modules-load.d/hydro-gateway.conf"
    fi
fi

log "limiting SD card writes"
install -d -m 0755 "$R/etc/systemd/journald.conf.d"
install -m 0644 "$BUNDLE/journald-hydro-gateway.conf" "$R/etc/systemd/journald.conf.d/hydro-gateway.conf"
if [ "$MANAGE_SYSTEM" = 1 ]; then systemctl restart systemd-journald; fi
# Debian keeps a persistent journal in /var/log/journal; journald now logs to RAM, and what this
# first boot wrote there (an 8 MB preallocated file) would otherwise stay on the card. The empty
# directory stays (systemd-tmpfiles recreates it at every boot anyway).
if [ -d "$R/var/log/journal" ]; then find "$R/var/log/journal" -mindepth 1 -delete; fi
if [ "$HG_NOATIME" = 1 ] && [ -f "$R/etc/fstab" ]; then
    edit_file "$R/etc/fstab" \
        '/^[^#[:space:]]+[[:space:]]+\/[[:space:]]/{/noatime/!s/^([^[:space:]]+[[:space:]]+\/[[:space:]]+[^[:space:]]+[[:space:]]+)([^[:space:]]+)/\1\2,noatime/}'
fi
if [ "$MANAGE_SYSTEM" = 1 ] && [ "$HG_DISABLE_SWAP" = 1 ] && systemctl cat dphys-swapfile.service >/dev/null 2>&1; then
    systemctl disable --now dphys-swapfile.service
    dphys-swapfile uninstall || true
fi

log "installing the gateway into $VENV"
# The wheels move to the root file system (the boot partition copy may go); Ansible keeps the same
# directory, so a later rollout of the same wheel changes nothing.
WHEELS="$R/opt/hydro-gateway/wheels"
install -d -m 0755 -o root -g root "$WHEELS"
for wheel in "$BUNDLE"/wheels/*.whl; do
    if [ -e "$wheel" ]; then install -m 0644 -o root -g root "$wheel" "$WHEELS/"; fi
done
[ -x "$VENV/bin/python" ] || "$HG_PYTHON" -m venv --system-site-packages "$VENV"
pip_args=(--disable-pip-version-check --find-links "$WHEELS")
if [ "$HG_OFFLINE" = 1 ]; then pip_args+=(--no-index); fi
if [ -n "$HG_PIP_INDEX_URL" ]; then pip_args+=(--index-url "$HG_PIP_INDEX_URL"); fi
package="$HG_PACKAGE"
# A bundled wheel is installed by path so a same-named package on a public index can never win.
case "$package" in *.whl) package="$WHEELS/$package" ;; esac
# shellcheck disable=SC2086  # HG_PIP_EXTRA_ARGS is a list of words
"$VENV/bin/pip" install "${pip_args[@]}" ${HG_PIP_EXTRA_ARGS:-} "$package"
# What is installed, for the Ansible health gate's rollback (the role writes the same file).
printf '%s\n' "$HG_PACKAGE" >"$R/opt/hydro-gateway/release"
chmod 0644 "$R/opt/hydro-gateway/release"

log "installing the systemd unit"
install -d -m 0755 "$R/etc/systemd/system"
install -m 0644 "$BUNDLE/hydro-gateway.service" "$R/etc/systemd/system/hydro-gateway.service"
if [ "$MANAGE_SYSTEM" = 1 ]; then
    systemctl daemon-reload
    systemctl enable hydro-gateway.service
    if [ "$REBOOT" = 1 ]; then
        # I2C/UART come up only after a reboot; the enabled unit starts then.
        log "rebooting to apply the boot configuration"
        systemctl --no-block reboot
    else
        systemctl restart hydro-gateway.service
    fi
fi
log "done"
