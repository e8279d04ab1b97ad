#!/usr/bin/env bash
# Regenerate constraints-cpu.txt from uv.lock: the exact versions `make install` gets with pip.
# torch stays ==2.13.0, which pip satisfies with the CPU build (the local 2.13.0+cpu wheel here);
# the CUDA-only packages the lock lists for PyPI's torch are never requested by that wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# Generated from uv.lock by scripts/export-constraints.sh (make lock). Do not edit."
    .venv/bin/uv export --frozen --all-extras --no-hashes --no-emit-project --no-header --format requirements.txt \
        | grep -v '^ *#' | grep -v '^-e '
} > constraints-cpu.txt
grep -q '^torch==2.13.0' constraints-cpu.txt || { echo "torch must stay pinned to 2.13.0" >&2; exit 1; }
