"""What Ray Serve adds per request at concurrency 1, measured with interleaved A/B rounds.

The single-process server (`python -m talkies serve`, a subprocess) and the talkies application on a local
Ray instance (one model-server replica; Serve's HTTP proxy on 127.0.0.1, talking gRPC to the ingress as
`talkies serve --ray` sets it) run at the same time, with the same registry and in-process engines
(bench/ray_scaleout.py's). The Ray application is reached two ways: through Serve's proxy (`ray`) and on
the ingress replica's own port (`direct`, TALKIES_RAY_DIRECT_PORT: Serve's direct ingress). Each round
times every request kind once on each side, back to back, in an order drawn at random per round, so that
the load of a shared machine falls on every side alike; the figures are medians over the rounds and the
medians of the per-round differences (Ray minus single).

Request kinds:

- `healthz`: `GET /healthz` (on Ray: proxy -> ingress replica; no model server);
- `speech`: "Hi." with espeak-ng as `pcm` (on Ray: proxy -> ingress -> model-server replica, the chunks back
  through a streaming handle);
- `transcribe`: a 1 s espeak-ng clip with pocketsphinx, `json` (on Ray: the decoded audio through the object
  store, the result through a handle);
- `handle speech` (Ray only, no HTTP): the model-server deployment's `synthesize` called through a
  `DeploymentHandle` from this process, and `handle round trip`: its `state` (no engine, a small dict
  back), which split the speech overhead into its hops.

    PYTHONPATH=src python bench/ray_overhead.py [--rounds 200] [--ray-cpus 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import free_port  # noqa: E402
from bench.ray_scaleout import GOAL_MS, _wait_ready, on_ray, ray_cluster, single_process  # noqa: E402
from tests.api.audio_helpers import speak, write_wav  # noqa: E402


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - start)


def _requests(client: httpx.Client, clip: bytes) -> dict[str, Callable[[], object]]:
    def healthz() -> None:
        client.get("/healthz").raise_for_status()

    def speech() -> None:
        body = {"model": "espeak-ng", "input": "Hi.", "response_format": "pcm"}
        client.post("/v1/audio/speech", json=body).raise_for_status()

    def transcribe() -> None:
        files = {"file": ("clip.wav", clip, "audio/wav")}
        client.post(
            "/v1/audio/transcriptions", data={"model": "pocketsphinx-en-us"}, files=files
        ).raise_for_status()

    return {"healthz": healthz, "speech": speech, "transcribe": transcribe}


def _handle_calls() -> dict[str, Callable[[], object]]:
    from ray import serve
    from talkies.engines.base import SpeechRequest
    from talkies.ray.app import APP_NAME

    handle = serve.get_deployment_handle("talkies-models-cpu", app_name=APP_NAME)
    streaming = handle.options(multiplexed_model_id="espeak-ng", stream=True, _by_reference=False)
    plain = handle.options(multiplexed_model_id="espeak-ng")

    def speech() -> None:
        list(streaming.synthesize.remote(SpeechRequest(text="Hi.", voice="en-us")))

    def round_trip() -> None:
        plain.state.remote().result()

    return {"handle speech": speech, "handle round trip": round_trip}


def _summary(times: dict[str, dict[str, list[float]]]) -> None:
    print("| request | single ms | via proxy ms | direct ms | proxy - single (IQR) | direct - single (IQR) |")
    print("|---|---|---|---|---|---|")
    for kind, sides in times.items():
        single = sides["single"]
        if not single:
            print(f"| {kind} | - | {statistics.median(sides['ray']):.1f} | - | - | - |")
            continue
        cells = [f"{statistics.median(sides[side]):.1f}" for side in ("single", "ray", "direct")]
        for side in ("ray", "direct"):
            diffs = [r - s for r, s in zip(sides[side], single, strict=True)]
            q1, _, q3 = statistics.quantiles(diffs, n=4)
            cells.append(f"{statistics.median(diffs):+.1f} ({q1:+.1f} .. {q3:+.1f})")
        print(f"| {kind} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="interleaved rounds (each: every kind, both)")
    parser.add_argument("--warm-up", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kinds = ("healthz", "speech", "transcribe", "handle speech", "handle round trip")
    times: dict[str, dict[str, list[float]]] = {k: {"single": [], "ray": [], "direct": []} for k in kinds}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="talkies-ray-overhead-") as name:
        tmp = Path(name)
        clip = write_wav(tmp / "clip.wav", [speak("Hello there.")]).read_bytes()
        direct_port = free_port()
        with (
            single_process(tmp) as single_url,
            ray_cluster(args.ray_cpus, direct_port) as port,
            on_ray(tmp, port, 1) as ray_url,
            httpx.Client(base_url=single_url, timeout=120) as single,
            httpx.Client(base_url=ray_url, timeout=120) as ray,
            httpx.Client(base_url=f"http://127.0.0.1:{direct_port}", timeout=120) as direct,
        ):
            _wait_ready(ray_url)
            _wait_ready(f"http://127.0.0.1:{direct_port}")
            sides = {
                "single": _requests(single, clip),
                "ray": _requests(ray, clip),
                "direct": _requests(direct, clip),
            }
            handle_calls = _handle_calls()
            for index in range(args.warm_up + args.rounds):
                timed = index >= args.warm_up
                for kind in ("healthz", "speech", "transcribe"):
                    order = ["single", "ray", "direct"]
                    rng.shuffle(order)
                    for side in order:
                        elapsed = _timed(sides[side][kind])
                        if timed:
                            times[kind][side].append(elapsed)
                for kind, call in handle_calls.items():
                    elapsed = _timed(call)
                    if timed:
                        times[kind]["ray"].append(elapsed)
    load_after = os.getloadavg()
    print(f"\n{args.rounds} interleaved rounds (after {args.warm_up} untimed), seed {args.seed}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"load average after:  {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    _summary(times)
    for side, how in (("ray", "through Serve's proxy"), ("direct", "on the direct port")):
        speech = [r - s for r, s in zip(times["speech"][side], times["speech"]["single"], strict=True)]
        overhead = statistics.median(speech)
        print(f"Ray's overhead on a short speech request {how}: {overhead:+.1f} ms (goal < {GOAL_MS:g})")


if __name__ == "__main__":
    main()
