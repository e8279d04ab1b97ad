"""Ray Serve vs the single-process server, on the same weight-free engines and the same requests.

Three servers in turn, each on 127.0.0.1:

- `single`: `python -m talkies serve` (a subprocess, like a deployment);
- `ray-1` and `ray-2`: the talkies application on a local Ray instance (`ray.init(num_cpus=...)`, Serve's
  HTTP proxy on 127.0.0.1), with one and then two model-server replicas.

Every server gets the same registry (pocketsphinx-en-us and espeak-ng with `max_concurrency: 2`) and
in-process engines, and on Ray TALKIES_RAY_MAX_ONGOING_REQUESTS=2, so a replica takes what its model
serves at once and Serve's router sends the rest to the other replica (which then loads the model too).

Per server:

- concurrency 8: `--requests` transcriptions of a ~3.5 s espeak-ng clip (multipart, `json`), eight
  clients at once; throughput (requests/s) and p50 / p95 latency;
- concurrency 1: `--rounds` sequential short speeches ("Hi.", `pcm`) and `GET /healthz`; medians. The
  difference from `single` is what Ray adds per request (the goal: under 10 ms).

    PYTHONPATH=src python bench/ray_scaleout.py [--requests 48] [--rounds 40] [--ray-cpus 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import SENTENCES, free_port, server_process  # noqa: E402
from tests.api.audio_helpers import VOICE, silence, speak, write_wav  # noqa: E402

GOAL_MS = 10.0
CONCURRENCY = 8


def registry(tmp: Path) -> Path:
    path = tmp / "models.json"
    models = {
        "pocketsphinx-en-us": {"executor": "pocketsphinx", "max_concurrency": 2},
        "espeak-ng": {"executor": "espeak", "default_voice": VOICE, "max_concurrency": 2},
    }
    path.write_text(json.dumps({"models": models}))
    return path


def environment(tmp: Path) -> dict[str, str]:
    return {
        "TALKIES_MODELS_FILE": str(registry(tmp)),
        "TALKIES_DATA_DIR": str(tmp / "data"),
        "TALKIES_ENGINE_ISOLATION": "inprocess",
        "TALKIES_DEVICE": "cpu",
        "TALKIES_SWEEPER_INTERVAL": "0",
        "TALKIES_LOG_LEVEL": "warning",
        "TALKIES_RAY_MAX_ONGOING_REQUESTS": "2",
        "TALKIES_RAY_REPLICA_CPUS": "0.5",
    }


@contextlib.contextmanager
def single_process(tmp: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **environment(tmp), "TALKIES_PORT": str(port)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    with server_process([sys.executable, "-m", "talkies", "serve"], port, env=env, timeout=120) as url:
        yield url


@contextlib.contextmanager
def ray_cluster(num_cpus: int, direct_port: int = 0) -> Iterator[int]:
    """A local Ray instance with what `talkies serve --ray` sets for the one it starts (Serve's proxy on
    gRPC; with `direct_port`, the ingress replica answering HTTP there too); yields the proxy's port."""
    import ray
    from ray import serve
    from talkies.ray.placement import local_ray_env
    from talkies.settings import load_settings

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    )
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.update(local_ray_env(load_settings(ray_direct_port=direct_port), None))
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def on_ray(tmp: Path, port: int, replicas: int) -> Iterator[str]:
    from ray import serve
    from talkies.ray.app import APP_NAME, build_app
    from talkies.settings import load_settings

    for key, value in environment(tmp).items():
        os.environ[key] = value
    settings = load_settings(ray_min_replicas=replicas, ray_max_replicas=replicas)
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        serve.delete(APP_NAME)


def transcribe(client: httpx.Client, clip: bytes) -> float:
    start = time.perf_counter()
    response = client.post(
        "/v1/audio/transcriptions",
        data={"model": "pocketsphinx-en-us"},
        files={"file": ("clip.wav", clip, "audio/wav")},
    )
    response.raise_for_status()
    return time.perf_counter() - start


def concurrent_load(url: str, clip: bytes, requests: int) -> dict[str, float]:
    clients = [httpx.Client(base_url=url, timeout=600) for _ in range(CONCURRENCY)]
    try:
        for client in clients:  # warm: the model loaded (on Ray, on whichever replicas the router picks)
            transcribe(client, clip)
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            futures = [pool.submit(transcribe, clients[i % CONCURRENCY], clip) for i in range(requests)]
            latencies = sorted(f.result() for f in futures)
        wall = time.perf_counter() - start
    finally:
        for client in clients:
            client.close()
    return {
        "throughput": requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[max(0, round(0.95 * len(latencies)) - 1)],
    }


def median_ms(call: Callable[[], object], rounds: int) -> float:
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def sequential(url: str, rounds: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=120) as client:

        def hi() -> None:
            body = {"model": "espeak-ng", "input": "Hi.", "response_format": "pcm"}
            client.post("/v1/audio/speech", json=body).raise_for_status()

        def health() -> None:
            client.get("/healthz").raise_for_status()

        return {"speech_ms": median_ms(hi, rounds), "healthz_ms": median_ms(health, rounds)}


def measure(url: str, clip: bytes, args: argparse.Namespace) -> dict[str, float]:
    return {**concurrent_load(url, clip, args.requests), **sequential(url, args.rounds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=48, help="transcriptions at concurrency 8")
    parser.add_argument("--rounds", type=int, default=40, help="sequential requests at concurrency 1")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="talkies-ray-bench-") as name:
        tmp = Path(name)
        sentence = speak(SENTENCES[0])
        clip = write_wav(tmp / "clip.wav", [sentence, silence(0.5), speak(SENTENCES[1])]).read_bytes()
        with single_process(tmp) as url:
            results["single process"] = measure(url, clip, args)
        with ray_cluster(args.ray_cpus) as port:
            for replicas in (1, 2):
                with on_ray(tmp, port, replicas) as url:
                    _wait_ready(url)
                    results[f"Ray Serve, {replicas} model-server replica(s)"] = measure(url, clip, args)
    base = results["single process"]
    print(f"\nconcurrency {CONCURRENCY}: {args.requests} transcriptions; concurrency 1: {args.rounds} rounds")
    print(
        "| server | req/s at c=8 | p50 ms | p95 ms | speech 'Hi.' c=1 ms | vs single "
        "| GET /healthz ms | vs single |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, row in results.items():
        print(
            f"| {label} | {row['throughput']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
            f"{row['speech_ms']:.1f} | {row['speech_ms'] - base['speech_ms']:+.1f} | "
            f"{row['healthz_ms']:.1f} | {row['healthz_ms'] - base['healthz_ms']:+.1f} |"
        )
    overhead = results["Ray Serve, 1 model-server replica(s)"]["speech_ms"] - base["speech_ms"]
    print(f"\nRay's overhead per request at concurrency 1: {overhead:+.1f} ms (goal < {GOAL_MS:g} ms)")


def _wait_ready(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the Ray application did not become ready")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
