#!/usr/bin/env bash
# Print the lib/ directories of the nvidia-* wheels in .venv, one per line (for ld.so.conf), so that
# CTranslate2 and onnxruntime-gpu find the CUDA libraries torch's wheels brought.
set -euo pipefail
cd "$(dirname "$0")/.."
find .venv/lib/python3*/site-packages/nvidia -maxdepth 2 -type d -name lib -printf '/app/%p\n' 2>/dev/null | sort
