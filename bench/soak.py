"""Soak: a real `talkies serve` under mixed load while its workers are killed and its models unloaded.

    python bench/soak.py                       # 10 minutes, concurrency 16 (the issue 24 soak)
    python bench/soak.py --minutes 2 --concurrency 8

The shipped CPU registry's pocketsphinx-en-us and espeak-ng, both in worker processes, with
TALKIES_MAX_LOADED_MODELS=1 (every change of request kind is a swap), a 5 s TALKIES_MODEL_TTL (sweeper every
second). --concurrency clients each send a random mix of transcriptions of a 1 s clip and speech requests,
one after the other; a worker process of the server is SIGKILLed every --kill-every seconds and every
model unloaded (`POST /unload`) every --unload-every seconds. A request that takes longer than --hang
seconds counts as a hang. At the end the load stops, the server idles past the TTL, and its RSS (server
and children) is compared with the RSS at start. Prints the figures as a Markdown table for BENCHMARKS.md.
Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import httpx  # noqa: E402
import psutil  # noqa: E402
from tests.fixtures.speech import speech_clip, write_wav  # noqa: E402
from tests.live_server import LiveServer, live_server  # noqa: E402

MIB = 1024 * 1024
ASR, TTS = "pocketsphinx-en-us", "espeak-ng"
TEXT = "Hello there, how are you?"


def total_rss(server: LiveServer) -> int:
    parent = psutil.Process(server.process.pid)
    total = 0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def workers(server: LiveServer) -> list[psutil.Process]:
    """The engine worker processes (not the resource tracker)."""
    found = []
    for child in psutil.Process(server.process.pid).children():
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


class Soak:
    def __init__(self, server: LiveServer, clip: bytes, args: argparse.Namespace) -> None:
        self.server = server
        self.clip = clip
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.hangs = 0
        self.kills = 0
        self.unloads = 0
        self.peak_rss = 0

    def one(self, client: httpx.Client, kind: str) -> None:
        start = time.perf_counter()
        try:
            if kind == "asr":
                files = {"file": ("clip.wav", self.clip, "audio/wav")}
                answer = client.post("/v1/audio/transcriptions", data={"model": ASR}, files=files)
            else:
                answer = client.post("/v1/audio/speech", json={"model": TTS, "input": TEXT})
            outcome = str(answer.status_code)
        except httpx.TimeoutException:
            outcome = "hang"
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        seconds = time.perf_counter() - start
        with self.lock:
            self.statuses[f"{kind} {outcome}"] += 1
            self.latencies.append(seconds)
            self.hangs += outcome == "hang"

    def client_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.server.url, timeout=self.args.hang) as client:
            while not self.stop.is_set():
                self.one(client, rng.choice(["asr", "tts"]))

    def every(self, seconds: float, action: Any) -> None:
        while not self.stop.wait(seconds):
            action()

    def kill_a_worker(self) -> None:
        found = workers(self.server)
        if found:
            with_pid = random.choice(found)
            try:
                os.kill(with_pid.pid, signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass

    def unload_all(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=self.args.hang) as client:
            try:
                if client.post("/unload").status_code == 200:
                    self.unloads += 1
            except httpx.TransportError:
                with self.lock:
                    self.statuses["unload failed"] += 1

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, total_rss(self.server))

    def run(self) -> None:
        threads = [threading.Thread(target=self.client_loop, args=(i,)) for i in range(self.args.concurrency)]
        threads += [
            threading.Thread(target=self.every, args=(self.args.kill_every, self.kill_a_worker)),
            threading.Thread(target=self.every, args=(self.args.unload_every, self.unload_all)),
            threading.Thread(target=self.every, args=(5.0, self.sample_rss)),
        ]
        for thread in threads:
            thread.start()
        self.stop.wait(self.args.minutes * 60)
        self.stop.set()
        for thread in threads:
            thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kill-every", type=float, default=60)
    parser.add_argument("--unload-every", type=float, default=30)
    parser.add_argument("--hang", type=float, default=300, help="seconds after which a request is a hang")
    args = parser.parse_args()
    models = json.loads((ROOT / "models-cpu.json").read_text())["models"]
    models = {slug: {**models[slug], "isolation": "process"} for slug in (ASR, TTS)}
    env = {
        "TALKIES_MAX_LOADED_MODELS": "1",
        "TALKIES_MODEL_TTL": "5",
        "TALKIES_SWEEPER_INTERVAL": "1",
        "TALKIES_MAX_QUEUE": "32",
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_wav(Path(tmp) / "clip.wav", speech_clip(1.0)).read_bytes()
        with live_server(Path(tmp), models, **env) as server:
            rss_start = total_rss(server)
            soak = Soak(server, clip, args)
            started = time.perf_counter()
            soak.run()
            elapsed = time.perf_counter() - started
            idle = server.wait_idle(60)
            time.sleep(10)  # past the 5 s TTL: the sweeper unloads what the last requests loaded
            rss_end = total_rss(server)
            alive = server.alive
            healthy = httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
            ps = server.ps()
            log = server.log().splitlines()
    latencies = sorted(soak.latencies)
    total = len(latencies)
    answered = sum(n for key, n in soak.statuses.items() if key.split()[-1].isdigit())
    print(f"statuses: {dict(sorted(soak.statuses.items()))}")
    print(f"idle after the load: {idle}; /api/ps at the end: {ps}")
    errors = [line for line in log if "ERROR" in line or "Traceback" in line]
    print(f"server log: {len(log)} lines, {len(errors)} errors / tracebacks; the last ones:")
    print("\n".join(errors[-15:]))
    print()
    print(
        "| minutes | concurrency | requests | answered | hangs | worker kills | /unload | p50 s | p95 s "
        "| max s | RSS start MiB | RSS peak MiB | RSS end MiB | server alive, /healthz |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {elapsed / 60:.1f} | {args.concurrency} | {total} | {answered} | {soak.hangs} | {soak.kills} "
        f"| {soak.unloads} | {statistics.median(latencies):.2f} | {latencies[int(0.95 * (total - 1))]:.2f} "
        f"| {latencies[-1]:.2f} | {rss_start / MIB:.0f} | {soak.peak_rss / MIB:.0f} | {rss_end / MIB:.0f} "
        f"| {alive}, {healthy} |"
    )


if __name__ == "__main__":
    main()
