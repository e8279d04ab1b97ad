"""What the `process` executor's proxy costs: the same requests through talkies and straight to its child.

One talkies (a subprocess, `python -m talkies serve`, like a deployment) runs three `process` models,
each a child on a fixed port so the bench can also reach it directly:

- `ears` and `voice`: a second talkies on the weight-free engines (pocketsphinx, espeak-ng), the upstream
  the issue names;
- `stand-in`: tests/process/script_server.py, whose speech endpoint does no work (3 x 1000 bytes), so the
  proxy's fixed cost per request shows without an engine's noise around it.

For scale, the last row is no proxying at all: a bare GET on the stand-in against talkies' own `/healthz`,
i.e. what any request through talkies' HTTP stack (uvicorn, auth, request context, metrics) costs on
this machine before the proxy does anything.

Each round sends, in ABBA order (direct then proxied, then the other way round), a transcription of a
~3.5 s espeak-ng clip (multipart, `response_format=json`), a streamed speech of a five-sentence paragraph
(`response_format=pcm`, time to the first body byte and to the last), and a stand-in speech. Both sides
use one keep-alive httpx client each; medians over the rounds. The proxy's difference is reported in ms and
as a share of the direct time (the issue's goal: under 5 ms or under 2 %).

    PYTHONPATH=src python bench/proxy_overhead.py [--rounds 40] [--stand-in-rounds 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import SENTENCES, free_port, server_process  # noqa: E402
from tests.api.audio_helpers import VOICE, silence, speak, write_wav  # noqa: E402

GOAL_MS = 5.0
GOAL_SHARE = 0.02


def registry(tmp: Path, ports: dict[str, int]) -> Path:
    """The outer registry: three `process` models on fixed ports (proxy given, as llama-swap wants)."""
    upstream_models = tmp / "upstream-models.json"
    upstream_models.write_text(
        json.dumps(
            {
                "models": {
                    "pocketsphinx-en-us": {"executor": "pocketsphinx"},
                    "espeak-ng": {"executor": "espeak", "default_voice": VOICE},
                }
            }
        )
    )

    def upstream(modality: str, port: int, model: str) -> dict[str, object]:
        return {
            "executor": "process",
            "modality": modality,
            "cmd": [sys.executable, "-m", "talkies", "serve", "--port", str(port)],
            "proxy": f"http://127.0.0.1:{port}",
            "checkEndpoint": "/healthz",
            "useModelName": model,
            "env": [
                f"TALKIES_MODELS_FILE={upstream_models}",
                f"TALKIES_DATA_DIR={tmp / f'upstream-{modality}'}",
                "TALKIES_DEVICE=cpu",
                "TALKIES_LOG_LEVEL=warning",
                "TALKIES_PRELOAD=",  # the outer's, inherited otherwise
            ],
        }

    script = ROOT / "tests" / "process" / "script_server.py"
    models = {
        "ears": upstream("asr", ports["ears"], "pocketsphinx-en-us"),
        "voice": upstream("tts", ports["voice"], "espeak-ng"),
        "stand-in": {
            "executor": "process",
            "modality": "tts",
            "cmd": [sys.executable, str(script), "--port", str(ports["stand-in"])],
            "proxy": f"http://127.0.0.1:{ports['stand-in']}",
        },
    }
    path = tmp / "models.json"
    path.write_text(json.dumps({"models": models}))
    return path


@contextlib.contextmanager
def outer_talkies(tmp: Path, ports: dict[str, int]) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "TALKIES_MODELS_FILE": str(registry(tmp, ports)),
        "TALKIES_DATA_DIR": str(tmp / "outer"),
        "TALKIES_MAX_LOADED_MODELS": "3",
        "TALKIES_PRELOAD": "ears,voice,stand-in",
        "TALKIES_DEVICE": "cpu",
        "TALKIES_LOG_LEVEL": "warning",
    }

    def children_ready(url: str) -> bool:
        rows = httpx.get(f"{url}/api/ps", timeout=2).json()["models"]
        return {r["model"] for r in rows if r["loaded"]} == set(ports)

    argv = [sys.executable, "-m", "talkies", "serve", "--port", str(port)]
    with server_process(argv, port, env=env, cwd=tmp, timeout=180, ready=children_ready) as url:
        yield url


def transcribe(client: httpx.Client, wav: bytes, model: str) -> float:
    started = time.perf_counter()
    answer = client.post(
        "/v1/audio/transcriptions",
        files=[("file", ("a.wav", wav, "audio/wav")), ("model", (None, model))],
        data={"response_format": "json"},
    )
    answer.raise_for_status()
    return time.perf_counter() - started


def speech(client: httpx.Client, body: dict[str, object]) -> tuple[float, float, int]:
    """(seconds to the first body byte, seconds to the last, bytes)."""
    started = time.perf_counter()
    first = 0.0
    size = 0
    with client.stream("POST", "/v1/audio/speech", json=body) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_raw():
            if chunk:
                first = first or time.perf_counter() - started
                size += len(chunk)
    return first, time.perf_counter() - started, size


def side_by_side(rounds: int, direct: Callable[[], object], proxied: Callable[[], object]) -> None:
    """Run `direct` and `proxied` `rounds` times each, ABBA order."""
    for index in range(rounds):
        for call in (direct, proxied) if index % 2 == 0 else (proxied, direct):
            call()


def row(name: str, direct: list[float], proxied: list[float], goal: bool = True) -> str:
    d, p = statistics.median(direct), statistics.median(proxied)
    diff = p - d
    met = "yes" if diff * 1000 < GOAL_MS or diff / d < GOAL_SHARE else "no"
    met = met if goal else "-"
    share = f"{diff / d * 100:+.1f} %"
    cells = [name, f"{d * 1000:.1f}", f"{p * 1000:.1f}", f"{diff * 1000:+.1f}", share, met]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--stand-in-rounds", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="talkies-proxy-bench-") as name:
        tmp = Path(name)
        wav = write_wav(tmp / "clip.wav", [speak(SENTENCES[0]), silence(0.4), speak(SENTENCES[1])])
        clip = wav.read_bytes()
        paragraph = " ".join(SENTENCES)
        ports = {"ears": free_port(), "voice": free_port(), "stand-in": free_port()}
        with outer_talkies(tmp, ports) as url:
            clients = {
                "direct-ears": httpx.Client(base_url=f"http://127.0.0.1:{ports['ears']}", timeout=300),
                "direct-voice": httpx.Client(base_url=f"http://127.0.0.1:{ports['voice']}", timeout=300),
                "direct-stand-in": httpx.Client(
                    base_url=f"http://127.0.0.1:{ports['stand-in']}", timeout=300
                ),
                "proxy": httpx.Client(base_url=url, timeout=300),
            }
            times: dict[str, list[float]] = {}

            def record(key: str, value: float) -> None:
                times.setdefault(key, []).append(value)

            def asr(side: str) -> Callable[[], None]:
                client = clients["proxy" if side == "proxy" else "direct-ears"]
                model = "ears" if side == "proxy" else "pocketsphinx-en-us"
                return lambda: record(f"asr-{side}", transcribe(client, clip, model))

            def tts(side: str) -> Callable[[], None]:
                client = clients["proxy" if side == "proxy" else "direct-voice"]
                body = {
                    "model": "voice" if side == "proxy" else "espeak-ng",
                    "input": paragraph,
                    "voice": VOICE,
                    "response_format": "pcm",
                }

                def call() -> None:
                    first, total, _ = speech(client, body)
                    record(f"tts-first-{side}", first)
                    record(f"tts-{side}", total)

                return call

            def stand_in(side: str) -> Callable[[], None]:
                client = clients["proxy" if side == "proxy" else "direct-stand-in"]
                body = {"model": "stand-in", "input": "x"}
                return lambda: record(f"stand-in-{side}", speech(client, body)[1])

            for warm in (asr, tts, stand_in):  # first requests (connections, caches) are not counted
                warm("direct")()
                warm("proxy")()
            times.clear()
            side_by_side(args.rounds, asr("direct"), asr("proxy"))
            side_by_side(args.rounds, tts("direct"), tts("proxy"))
            side_by_side(args.stand_in_rounds, stand_in("direct"), stand_in("proxy"))

            def bare(side: str) -> Callable[[], None]:
                client = clients["proxy" if side == "proxy" else "direct-stand-in"]
                path = "/healthz" if side == "proxy" else "/health"

                def call() -> None:
                    started = time.perf_counter()
                    client.get(path).raise_for_status()
                    record(f"bare-{side}", time.perf_counter() - started)

                return call

            side_by_side(args.stand_in_rounds, bare("direct"), bare("proxy"))
            for client in clients.values():
                client.close()

    print(f"rounds: {args.rounds} (stand-in: {args.stand_in_rounds}); medians; clip ~3.5 s; 5 sentences")
    print("| request | direct ms | through talkies ms | difference ms | difference / direct | goal met |")
    print("|---|---|---|---|---|---|")
    print(row("transcription (pocketsphinx, json)", times["asr-direct"], times["asr-proxy"]))
    print(row("speech, whole stream (espeak-ng, pcm)", times["tts-direct"], times["tts-proxy"]))
    print(row("speech, first audio byte", times["tts-first-direct"], times["tts-first-proxy"]))
    print(row("stand-in speech (no engine work)", times["stand-in-direct"], times["stand-in-proxy"]))
    bare = (times["bare-direct"], times["bare-proxy"])
    print(row("not proxied: GET /health vs talkies' /healthz", *bare, goal=False))


if __name__ == "__main__":
    main()
