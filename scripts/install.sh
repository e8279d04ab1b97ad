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
# TALKIES_EXTRAS picks the stack: "cpu,test" for development and CI (default), "cpu" or "cuda" in images.
EXTRAS=${TALKIES_EXTRAS:-cpu,test}
if [[ ",$EXTRAS," == *",test,"* ]]; then
    SYSTEM_PACKAGES+=(chromium)  # the playground's browser tests (Playwright drives Debian's Chromium)
    # tests/ray runs the Ray Serve deployment on a local two-node cluster: the suite needs the extra.
    [[ ",$EXTRAS," == *",ray,"* ]] || EXTRAS="$EXTRAS,ray"
fi
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
echo "install: python packages [$EXTRAS] (constraints-cpu.txt)"
.venv/bin/pip install -q -c constraints-cpu.txt -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",cuda,"* ]]; then
    # onnxruntime and onnxruntime-gpu install the same `onnxruntime` package; the CPU wheel (required by
    # silero-vad, onnx-asr and the vad / qwen3 extras) shadows the GPU one, whose CUDAExecutionProvider
    # then goes missing. Remove the CPU wheel and lay the GPU wheel's files down again.
    if .venv/bin/pip show -q onnxruntime >/dev/null 2>&1; then
        echo "install: replacing the CPU onnxruntime with onnxruntime-gpu"
        .venv/bin/pip uninstall -q -y onnxruntime
        .venv/bin/pip install -q --no-deps --force-reinstall -c constraints-cpu.txt onnxruntime-gpu
    fi
    .venv/bin/python -c 'import onnxruntime as o, sys; p = o.get_available_providers(); sys.exit(0 if "CUDAExecutionProvider" in p else f"install: onnxruntime lacks CUDAExecutionProvider: {p}")'
fi
if [[ ",$EXTRAS," == *",test,"* ]]; then
    # openai-whisper is only needed for its tokenizer asset when tests build Whisper models; its own
    # dependencies (triton, a second torch) are not wanted.
    .venv/bin/pip install -q --no-deps openai-whisper==20250625
fi
if [[ ",$EXTRAS," == *",cpu,"* || ",$EXTRAS," == *",cuda,"* || ",$EXTRAS," == *",qwen3,"* || ",$EXTRAS," == *",test,"* ]]; then
    # Qwen3-TTS runtimes without their declared dependencies (gradio for a demo, a CUDA torchaudio,
    # huggingface-hub<2): the `qwen3` extra carries what they import. See docs/qwen3.md.
    .venv/bin/pip install -q --no-deps qwen-tts-hf==0.1.1.post1
    if [[ ",$EXTRAS," == *",cuda,"* ]]; then
        .venv/bin/pip install -q --no-deps faster-qwen3-tts==0.5.4
    fi
fi
echo "install: done"
