#!/usr/bin/env bash
# Install talkies' CPU stack and test tools into ./.venv. Idempotent: re-running changes nothing that is
# already in place. System packages (ffmpeg, espeak-ng, sox) come from apt-get when running as root.
#
# Python packages: pip with constraints-cpu.txt, which is exported from uv.lock (`make lock`), so the
# local install gets exactly the locked versions. torch is pinned to 2.13.0 there; on this machine kind pip
# takes the local CPU wheel (find-links), elsewhere set PIP_EXTRA_INDEX_URL to a CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(ffmpeg espeak-ng sox)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "install: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "install: missing system packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "install: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# TALKIES_EXTRAS picks the stack: "cpu,test" for development and CI (default), "cpu" or "cuda" in images.
EXTRAS=${TALKIES_EXTRAS:-cpu,test}
echo "install: python packages [$EXTRAS] (constraints-cpu.txt)"
.venv/bin/pip install -q -c constraints-cpu.txt -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",test,"* ]]; then
    # openai-whisper is only needed for its tokenizer asset when tests build Whisper models; its own
    # dependencies (triton, a second torch) are not wanted.
    .venv/bin/pip install -q --no-deps -c constraints-cpu.txt openai-whisper
fi
echo "install: done"
