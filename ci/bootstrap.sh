#!/usr/bin/env bash
# Installs what mmap-harness needs on a Debian or Ubuntu host, idempotently:
# QEMU, debootstrap and friends from apt (and git, gcc, binutils and perl for
# `illumos check`), then the harness into .venv.
# Used by both README commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-system-x86 qemu-utils debootstrap debian-archive-keyring gpgv
              busybox-static cpio zstd lz4
              e2fsprogs util-linux python3-venv
              git gcc binutils perl)    # illumos check: reads the gate, compiles, ld -r, nm, cstyle
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}" >&2
    "${SUDO[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q \
        --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Reinstall only when the project's metadata changed since the last install.
stamp=.venv/.mmap-harness-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e .
    touch "$stamp"
fi
