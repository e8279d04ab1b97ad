"""Where talkies' time goes on a 5 s clip with real Whisper base weights, stage by stage, beside
faster-whisper called directly with the same options (issue 26, item 4).

    python bench/real_overhead.py --rounds 20

Two talkies servers run side by side (`bench/_timed_server.py`: `talkies serve` with timers on each stage
of a transcription request, the engine's own time measured inside its worker process), on the same Whisper
base snapshot (`scripts/fetch-real-models.sh`), engines in worker processes (the default),
TALKIES_CPU_THREADS=--threads: "new" is this tree; "old decode" is the same tree with every upload decoded
by PyAV, as before talkies.audio.pcm_wav. The bench process holds its own `WhisperModel` with the same
threads for the direct side. Every round runs, in a rotating order so the machine's load falls on all
alike:

    direct (file)     `WhisperModel.transcribe(path)`: faster-whisper decodes the WAV itself
    direct (pcm)      `WhisperModel.transcribe(pcm)` on PCM decoded beforehand: the model's own time
    HTTP new          POST /v1/audio/transcriptions (multipart 16 kHz mono WAV, response_format=json)
    HTTP old decode   the same to the server that decodes with PyAV

The figure that does not depend on the load of the moment: **talkies' own time**, each request's wall
time at the client minus the model's time inside the worker for that same request. Decoding options, all
sides: beam 5, temperature 0 (no fallback), language en, no word timestamps, no VAD (a 5 s clip is under
TALKIES_VAD_CHUNK_THRESHOLD). Figures: median over the rounds, 25th-75th percentile beside it, ms.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench._harness import wav_bytes  # noqa: E402
from bench._timed_server import STAGES_ROUTE  # noqa: E402
from bench.real_models import DECODING, WHISPER, talkies_server  # noqa: E402
from tests.fixtures.real_models import fetch_real_models  # noqa: E402
from tests.fixtures.speech import speech_clip  # noqa: E402

STAGE_ORDER = ("request", "form", "decode", "acquire", "engine", "model")
SERVERS = {"HTTP new": {}, "HTTP old decode": {"BENCH_PYAV_ONLY": "1"}}


def spread(values: list[float]) -> str:
    """Median and the 25th-75th percentile range, in milliseconds."""
    if len(values) < 2:
        return f"{values[0] * 1000:.1f}" if values else "-"
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{q2 * 1000:.1f} ({q1 * 1000:.1f}-{q3 * 1000:.1f})"


def minus(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def main() -> None:
    import httpx
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length (keep it under 30 s)")
    args = parser.parse_args()
    models = fetch_real_models()
    script = ROOT / "bench" / "_timed_server.py"
    model = WhisperModel(
        str(models / "whisper-base"), device="cpu", compute_type="int8", cpu_threads=args.threads
    )
    print(f"decoding options, all sides: {DECODING}, no VAD; threads={args.threads}", flush=True)
    form = {"model": WHISPER, "language": "en", "temperature": "0", "response_format": "json"}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        urls = {
            name: stack.enter_context(talkies_server(models, args.threads, script=script, extra_env=env))
            for name, env in SERVERS.items()
        }
        client = stack.enter_context(httpx.Client(timeout=600))
        path = tmp / "clip.wav"
        path.write_bytes(wav_bytes(speech_clip(args.seconds)))
        data = path.read_bytes()
        pcm = decode_audio(str(path), sampling_rate=16_000)

        def direct(audio: Any) -> str:
            return "".join(s.text for s in model.transcribe(audio, vad_filter=False, **DECODING)[0])

        def http(url: str) -> str:
            files = {"file": ("clip.wav", data, "audio/wav")}
            answer = client.post(f"{url}/v1/audio/transcriptions", data=form, files=files)
            answer.raise_for_status()
            return str(answer.json()["text"])

        sides: dict[str, Callable[[], str]] = {
            "direct (file)": lambda: direct(str(path)),
            "direct (pcm)": lambda: direct(pcm),
            **{name: (lambda url=url: http(url)) for name, url in urls.items()},
        }
        walls: dict[str, list[float]] = {name: [] for name in sides}
        stages: dict[str, dict[str, list[float]]] = {name: {} for name in urls}
        texts = {name: side() for name, side in sides.items()}  # load the models, untimed
        for url in urls.values():
            client.get(f"{url}{STAGES_ROUTE}")
        names = list(sides)
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                text = sides[name]()
                walls[name].append(time.perf_counter() - start)
                if text != texts[name]:
                    print(f"  {name}: text changed: {text!r}", flush=True)
                if name in urls:
                    for stage, values in client.get(f"{urls[name]}{STAGES_ROUTE}").json().items():
                        stages[name].setdefault(stage, []).append(sum(values))
            print(f"  round {round_}: " + ", ".join(f"{n} {walls[n][-1]:.3f}" for n in names), flush=True)
    report(args, texts, walls, stages)


def report(
    args: argparse.Namespace,
    texts: dict[str, str],
    walls: dict[str, list[float]],
    stages: dict[str, dict[str, list[float]]],
) -> None:
    print(f"\ntexts: {texts}\nsame text on every side: {len(set(texts.values())) == 1}")
    print(f"\n{args.seconds:g} s clip, {args.rounds} rounds; ms, median (25th-75th percentile)\n")
    print("| side | wall (client) | minus direct (file), same round |\n|---|---|---|")
    for name, values in walls.items():
        print(f"| {name} | {spread(values)} | {spread(minus(values, walls['direct (file)']))} |")
    servers = list(stages)
    print("\n| stage | " + " | ".join(servers) + " |\n|---|" + "---|" * len(servers))
    rows: dict[str, list[list[float]]] = {stage: [] for stage in STAGE_ORDER}
    for name in servers:
        got = stages[name]
        for stage in STAGE_ORDER:
            rows[stage].append(got.get(stage, []))
    for name in servers:
        got = stages[name]
        model = got.get("model", [])
        derived = {
            "ipc (engine - model)": minus(got.get("engine", []), model),
            "server, outside the engine (request - engine)": minus(got["request"], got["engine"]),
            "HTTP client and uvicorn (wall - request)": minus(walls[name], got["request"]),
            "**talkies' own time (wall - model)**": minus(walls[name], model),
        }
        for label, values in derived.items():
            rows.setdefault(label, []).append(values)
    for label, columns in rows.items():
        print(f"| {label} | " + " | ".join(spread(values) for values in columns) + " |")


if __name__ == "__main__":
    main()
