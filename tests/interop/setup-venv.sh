#!/usr/bin/env bash
# Creates, or reuses, the Python venv that the interop tests run py-spiffe
# from: the packages pinned in tests/interop/requirements.txt, from PyPI,
# into target/interop-venv (or $HALLMARK_INTEROP_VENV). Idempotent: a venv
# built from the same requirements file is kept as it is.
#
# .ci/run calls it before the tests; tests/e2e/py_spiffe.rs calls it too, so
# `cargo nextest run` works alone, and skips (loudly) only if this fails.
# Needs /usr/bin/python3 with its venv module (Debian: python3-venv).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${HALLMARK_INTEROP_VENV:-$root/target/interop-venv}"
requirements="$here/requirements.txt"
python=/usr/bin/python3
stamp="$venv/.requirements.sha256"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
mkdir -p "$(dirname "$venv")"
# One builder at a time (parallel test processes, a test during .ci/run).
exec 9>"$venv.lock"
flock 9

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi

if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup-venv: $python has no venv module: install python3-venv (apt-get install python3-venv)" >&2
    exit 1
fi

rm -rf "$venv"
"$python" -m venv "$venv"
# Wheels only: building grpcio from source would take most of an hour.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: --no-deps -r "$requirements"
"$venv/bin/pip" check --disable-pip-version-check
"$venv/bin/python" -c 'import grpc, spiffe'
echo "$want" >"$stamp"
echo "setup-venv: py-spiffe ready in $venv"
