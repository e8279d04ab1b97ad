#!/usr/bin/env bash
# Build the virtual environments of the peer servers that bench/real_peers.py runs beside talkies, outside
# the project (nothing of them is committed or installed into .venv):
#
#   faster-whisper-server   PyPI's faster-whisper-server==0.0.3, Python 3.11
#   speaches                a checkout of github.com/speaches-ai/speaches (not on PyPI; Python 3.12),
#                           installed with exactly the versions of its uv.lock (`uv export --frozen`,
#                           then `uv pip install --no-deps`: the lock's override-dependencies do not
#                           survive a plain re-resolve). Pass the checkout as SPEACHES_SRC; without it
#                           only faster-whisper-server is built.
#
#   SPEACHES_SRC=/path/to/speaches scripts/peer-venvs.sh     # prints the two pythons for real_peers.py
#
# PEERS_DIR (default ~/.cache/talkies-peers) holds the venvs. PYTHON311 / PYTHON312 pick the interpreters.
# Needs PyPI; speaches pulls torch with its CUDA libraries (several GB) for its diarization router.
set -euo pipefail
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/talkies-peers}
PY311=${PYTHON311:-python3.11}
PY312=${PYTHON312:-python3.12}
mkdir -p "$PEERS_DIR"
cd "$PEERS_DIR"

if [ ! -x fws/bin/faster-whisper-server ]; then
  "$PY311" -m venv fws
  fws/bin/pip install faster-whisper-server==0.0.3
fi
echo "faster-whisper-server: $PEERS_DIR/fws/bin/python"

if [ -n "${SPEACHES_SRC:-}" ] && [ ! -x speaches/bin/uvicorn ]; then
  [ -x uvtool/bin/uv ] || { "$PY311" -m venv uvtool && uvtool/bin/pip install uv; }
  (cd "$SPEACHES_SRC" && "$PEERS_DIR/uvtool/bin/uv" export --frozen --no-dev --no-hashes \
    --no-emit-project -o "$PEERS_DIR/speaches-req.txt")
  "$PY312" -m venv speaches
  uvtool/bin/uv pip install --python speaches/bin/python --no-deps -r speaches-req.txt
  uvtool/bin/uv pip install --python speaches/bin/python --no-deps "$SPEACHES_SRC"
fi
if [ -x speaches/bin/uvicorn ]; then
  echo "speaches: $PEERS_DIR/speaches/bin/python"
fi
