"""Mixed load: transcription and speech alternating, the loop every voice assistant runs (listen, speak).

    python bench/mixed_load.py                      # 4 rounds of 48 requests at concurrency 8, both configs
    python bench/mixed_load.py --rounds 4 --requests 100

A real `talkies serve` (a subprocess) with the shipped CPU registry (models-cpu.json): every client of
--concurrency alternates a pocketsphinx-en-us transcription of a 1 s espeak-ng clip and an espeak-ng
speech request ("Hello there, how are you?"). Warm-up: one request of each kind. Then --rounds rounds of
--requests requests each; per round the model loads (the server's "loaded <model>" log lines), requests
per second, p50 / p95 latency, and the server's RSS (the server process and every child) at the end of
the round. Three configurations one after the other, each on a fresh server (--configs picks some): the
defaults (memory budget, TALKIES_MAX_LOADED_MODELS=8, pocketsphinx max_concurrency 2 as shipped),
`asr-concurrency=1` (the defaults with pocketsphinx serving one request at a time, as it did before its
decoder released the GIL) and `max_loaded_models=1` (the old default: one model resident, a swap whenever
the other kind of request comes; swap fairness groups the requests). Also the c=1 median of each request
kind on each server, the baseline for the p95 at c=8.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
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
LOADED = re.compile(r"\bloaded (\S+) in ")


def total_rss(server: LiveServer) -> int:
    parent = psutil.Process(server.process.pid)
    total = 0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def loads(server: LiveServer) -> int:
    return len(LOADED.findall(server.log()))


class Load:
    def __init__(self, url: str, clip: bytes) -> None:
        self.url = url
        self.clip = clip

    def one(self, client: httpx.Client, kind: str) -> float:
        start = time.perf_counter()
        if kind == "asr":
            files = {"file": ("clip.wav", self.clip, "audio/wav")}
            answer = client.post("/v1/audio/transcriptions", data={"model": ASR}, files=files)
        else:
            body = {"model": TTS, "input": TEXT, "response_format": "wav"}
            answer = client.post("/v1/audio/speech", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"{kind}: {answer.status_code} {answer.text[:300]}")
        return time.perf_counter() - start

    def round(self, requests: int, concurrency: int) -> tuple[list[float], float]:
        """`requests` requests from `concurrency` clients, each alternating ASR / TTS."""
        latencies: list[float] = []
        lock = threading.Lock()
        counter = iter(range(requests))
        errors: list[BaseException] = []

        def client_loop(index: int) -> None:
            kinds = ["asr", "tts"] if index % 2 == 0 else ["tts", "asr"]
            with httpx.Client(base_url=self.url, timeout=600) as client:
                turn = 0
                while True:
                    with lock:
                        if next(counter, None) is None:
                            return
                    try:
                        seconds = self.one(client, kinds[turn % 2])
                    except BaseException as exc:
                        errors.append(exc)
                        return
                    turn += 1
                    with lock:
                        latencies.append(seconds)

        start = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return latencies, time.perf_counter() - start


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


CONFIGS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    # name -> (server environment, fields changed on the pocketsphinx entry of models-cpu.json)
    "default": ({}, {}),
    "asr-concurrency=1": ({}, {"max_concurrency": 1}),
    "max_loaded_models=1": ({"TALKIES_MAX_LOADED_MODELS": "1"}, {}),
}


def run_config(name: str, args: argparse.Namespace, clip: bytes) -> list[dict[str, Any]]:
    env, asr_fields = CONFIGS[name]
    models = json.loads((ROOT / "models-cpu.json").read_text())["models"]
    models[ASR] = {**models[ASR], **asr_fields}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp), models, **env) as server:
        load = Load(server.url, clip)
        with httpx.Client(base_url=server.url, timeout=600) as client:
            load.one(client, "asr")
            load.one(client, "tts")
            if args.baseline:
                for kind in ("asr", "tts"):
                    times = [load.one(client, kind) for _ in range(5)]
                    print(f"[{name}] c=1 median {kind}: {statistics.median(times) * 1000:.0f} ms")
        for number in range(1, args.rounds + 1):
            before = loads(server)
            latencies, seconds = load.round(args.requests, args.concurrency)
            row = {
                "config": name,
                "round": number,
                "loads_per_100": 100 * (loads(server) - before) / len(latencies),
                "rps": len(latencies) / seconds,
                "p50": statistics.median(latencies),
                "p95": percentile(latencies, 0.95),
                "rss_mib": total_rss(server) / MIB,
            }
            rows.append(row)
            print(
                f"[{name}] round {number}: {row['loads_per_100']:.0f} loads/100, {row['rps']:.2f} req/s, "
                f"p50 {row['p50']:.2f}s, p95 {row['p95']:.2f}s, RSS {row['rss_mib']:.0f} MiB",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"a subset of {', '.join(CONFIGS)}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_wav(Path(tmp) / "clip.wav", speech_clip(1.0)).read_bytes()
    rows = [row for name in args.configs.split(",") for row in run_config(name, args, clip)]
    print()
    print("| config | round | loads / 100 req | req/s | p50 s | p95 s | RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['round']} | {r['loads_per_100']:.0f} | {r['rps']:.2f} | {r['p50']:.2f} "
            f"| {r['p95']:.2f} | {r['rss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
