"""Memory of a fresh server process around one model's load, requests and unload, parent plus workers.

Run in its own interpreter, so that nothing the test session (or another engine) imported counts:

    python -m tests.engines.memory_probe --executor whisper --model-dir DIR --mode process --requests 3

prints one JSON object: idle / loaded / unloaded bytes (parent + every descendant, by psutil), the
parent's alone, and the worker's pid while loaded. Used by tests/engines/test_host_real.py and
bench/isolation.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REQUEST_OPTIONS: dict[str, dict[str, object]] = {
    # bounded decoding: random weights decode nonsense until their token limit
    "whisper": {"beam_size": 1, "max_new_tokens": 12, "condition_on_previous_text": False},
}


def total_rss(process: psutil.Process | None = None) -> int:
    process = process or psutil.Process()
    rss = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += child.memory_info().rss
    return int(rss)


def settle() -> None:
    from talkies.engines.common import release_memory

    release_memory()
    time.sleep(0.3)


def one_request(engine: Any, executor: str) -> None:
    from talkies.engines.base import SpeechRequest, TranscriptionRequest

    if hasattr(engine, "transcribe"):
        audio = np.random.default_rng(0).normal(0, 0.1, 16_000 * 5).astype(np.float32)
        engine.transcribe(TranscriptionRequest(audio=audio, language="en", word_timestamps=False))
    else:
        voice = next(v.name for v in engine.voices() if v.default)
        text = "Isolation keeps memory honest. Every model lives in its own process."
        for _ in engine.synthesize(SpeechRequest(text=text, voice=voice)):
            pass


def probe(executor: str, model_dir: Path, mode: str, requests: int, repo: str | None) -> dict[str, Any]:
    import talkies.api.app  # noqa: F401  (a server's idle footprint includes the web stack)
    from talkies.engines import make_engine_factory
    from talkies.engines.base import EngineContext
    from talkies.registry import ModelSpec
    from talkies.settings import load_settings

    slug = model_dir.name
    entry = {"executor": executor, "slug": slug, "repo": repo or f"test/{slug}", "isolation": mode}
    spec = ModelSpec.model_validate(entry)
    options = REQUEST_OPTIONS.get(executor, {})
    context = EngineContext(slug=slug, model_dir=model_dir, device="cpu", cpu_threads=1, options=options)
    engine = make_engine_factory(load_settings())(spec, context)
    settle()
    figures: dict[str, Any] = {"mode": mode, "executor": executor, "idle": total_rss()}
    engine.load()
    for _ in range(requests):
        one_request(engine, executor)
    settle()
    figures["loaded"] = total_rss()
    figures["worker_pid"] = getattr(engine, "worker_pid", None)
    engine.unload()
    del engine
    settle()
    figures["unloaded"] = total_rss()
    figures["parent_unloaded"] = psutil.Process().memory_info().rss
    return figures


def run_probe(executor: str, model_dir: Path, mode: str, requests: int = 2) -> dict[str, Any]:
    """This module in a fresh interpreter (the current one's sys.path): the figures it prints."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [sys.executable, "-m", "tests.engines.memory_probe", "--executor", executor]
    command += ["--model-dir", str(model_dir), "--mode", mode, "--requests", str(requests)]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed for {executor} ({mode}):\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executor", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--mode", choices=("process", "inprocess"), required=True)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--repo")
    args = parser.parse_args()
    print(json.dumps(probe(args.executor, args.model_dir, args.mode, args.requests, args.repo)))


if __name__ == "__main__":
    main()
