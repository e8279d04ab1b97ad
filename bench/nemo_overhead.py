"""NeMo executors through talkies vs NeMo called directly, and long files batched vs one region at a time.

    python bench/nemo_overhead.py                              # both parts, all three executors
    python bench/nemo_overhead.py --parts long --executors parakeet --minutes 5

Models: the tiny random-weight models of tests/fixtures/nemo.py (FastConformer encoder, 2 layers of 64
dims): a TDT `.nemo` for `parakeet`, a canary2-prompt multitask `.nemo` for `canary_multitask`, and a SALM
with that encoder and a one-layer Qwen3-shaped decoder for `canary_salm`. Random weights decode nonsense;
their decoding is bounded by their own saved configs (TDT `max_symbols`, Canary `max_sequence_length`) and,
for the SALM, by the engine's `max_new_tokens` rule (8 per second of the longest clip + 16), which the
direct twin uses as well: the work per request is the same on both sides.

overhead: for each executor, an 8 s clip (one region: under TALKIES_VAD_CHUNK_THRESHOLD) and a 60 s file
(Silero VAD regions, decoded 4 at a time): the wall time of an HTTP request (multipart upload of the WAV to
/v1/audio/transcriptions, `response_format=json`, a real uvicorn server in a subprocess, engines in the
server process) against NeMo called directly in this process on the model object the engine restored (so
dtype and decoding config are identical), on the same samples (the file decoded by talkies' decoder; for
60 s also cut by talkies' VAD, which the direct caller then pays for too). Rounds interleave the paths (each
direct / HTTP pair in alternating order), so the shared machine's load hits them alike; medians.

long: a long file (--minutes) through each engine in this process, its VAD regions decoded with
`nemo_batch_size` (TALKIES_NEMO_BATCH_SIZE) 1, i.e. one region per forward pass, against 4 (the default)
and 16; audio-seconds per second, medians of --repeat interleaved rounds. VAD time is not included.

Without NeMo installed (the `nemo` extra) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench._harness import EngineSeconds, engine_seconds, free_port, server_process  # noqa: E402
from tests.fixtures.cache import install_snapshot  # noqa: E402
from tests.fixtures.speech import SAMPLE_RATE, long_speech, speech_clip, write_wav  # noqa: E402

from talkies.engines.base import EngineContext, Region, TranscriptionRequest  # noqa: E402
from talkies.registry import ModelSpec  # noqa: E402

# executor -> (slug, registry entry); the fixtures kind that builds its model is in `install`
REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "parakeet": (
        "parakeet-tdt-0.6b-v3",
        {"executor": "parakeet", "repo": "nvidia/parakeet-tdt-0.6b-v3", "languages": ["en"]},
    ),
    "canary_multitask": (
        "canary-1b-flash",
        {
            "executor": "canary_multitask",
            "repo": "nvidia/canary-1b-flash",
            "default_source_lang": "en",
            "default_target_lang": "en",
            "languages": ["en", "de", "fr", "es"],
        },
    ),
    "canary_salm": (
        "canary-qwen-2.5b",
        {
            "executor": "canary_salm",
            "repo": "nvidia/canary-qwen-2.5b",
            "default_source_lang": "en",
            "languages": ["en"],
            "dependencies": ["Qwen/Qwen3-1.7B"],
        },
    ),
}
HTTP_BATCH = 4  # TALKIES_NEMO_BATCH_SIZE's default


def install(executor: str, data_dir: Path) -> Path:
    from tests.fixtures.nemo import build_salm, install_nemo

    slug = REGISTRY[executor][0]
    if executor == "parakeet":
        return install_nemo("tdt", data_dir, slug)
    if executor == "canary_multitask":
        return install_nemo("canary", data_dir, slug)
    return install_snapshot(build_salm() / "model", data_dir, slug)


def llm_cache() -> Path:
    """The Hugging Face cache holding the SALM's tiny Qwen3 (where `talkies pull` would put it)."""
    from tests.fixtures.nemo import build_salm

    return build_salm() / "hub"


def make_engine(executor: str, model_dir: Path, threads: int, batch_size: int) -> Any:
    from talkies.engines import create_engine

    slug, entry = REGISTRY[executor]
    spec = ModelSpec.model_validate({"slug": slug, **entry})
    context = EngineContext(slug, model_dir, "cpu", threads, {"nemo_batch_size": batch_size})
    engine = create_engine(spec, context)
    engine.load()
    return engine


def vad(pcm: Any) -> tuple[Region, ...]:
    from talkies.audio.vad import VadOptions, speech_regions

    return tuple(speech_regions(pcm, VadOptions()))


# --- NeMo called directly --------------------------------------------------------------------------------


def direct_call(executor: str, engine: Any, path: Path, batch_size: int) -> Callable[[], object]:
    """What a NeMo user runs on this file: decode, (VAD when long,) then NeMo's own API on the clips.

    `engine` only supplies the restored model (and, for Canary, the prompt it would build); every call
    below is NeMo's.
    """
    from talkies.audio.decode import decode_audio

    model = engine.require_model().model
    long = len(decode_audio(path)) / SAMPLE_RATE > 30

    def clips() -> list[Any]:
        pcm = decode_audio(path)
        if not long:
            return [pcm]
        return [pcm[int(r.start * SAMPLE_RATE) : int(r.end * SAMPLE_RATE)] for r in vad(pcm)]

    if executor == "parakeet":

        def parakeet() -> object:
            with _no_grad():
                hyps = model.transcribe(
                    clips(), batch_size=batch_size, timestamps=True, return_hypotheses=True, verbose=False
                )
            return [h.text for h in (hyps[0] if isinstance(hyps, tuple) else hyps)]

        return parakeet
    if executor == "canary_multitask":
        from nemo.collections.asr.models.aed_multitask_models import MultiTaskTranscriptionConfig

        prompt = engine.prompt(TranscriptionRequest(audio=decode_audio(path), language="en"), model)

        def canary() -> object:
            config = MultiTaskTranscriptionConfig(
                batch_size=batch_size,
                return_hypotheses=True,
                verbose=False,
                enable_chunking=False,
                prompt=prompt,
            )
            with _no_grad():
                return [h.text for h in model.transcribe(clips(), override_config=config)]

        return canary

    def salm() -> object:
        texts: list[str] = []
        pieces = clips()
        for start in range(0, len(pieces), batch_size):
            texts.extend(salm_generate(model, pieces[start : start + batch_size]))
        return texts

    return salm


def salm_generate(model: Any, clips: list[Any]) -> list[str]:
    """SALM.generate on a padded batch, greedy, bounded as the engine bounds it."""
    import torch
    from transformers import GenerationConfig

    longest = max(len(clip) for clip in clips)
    audios = torch.zeros(len(clips), longest, dtype=torch.float32)
    for row, clip in enumerate(clips):
        audios[row, : len(clip)] = torch.from_numpy(clip)
    lens = torch.tensor([len(clip) for clip in clips], dtype=torch.int64)
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=model.text_bos_id,
        eos_token_id=model.text_eos_id,
        pad_token_id=model.text_pad_id,
        max_new_tokens=math.ceil(longest / SAMPLE_RATE * 8) + 16,
        do_sample=False,
    )
    prompt = [{"role": "user", "content": f"Transcribe the following: {model.audio_locator_tag}"}]
    with torch.no_grad():
        answers = model.generate(
            prompts=[prompt] * len(clips), audios=audios, audio_lens=lens, generation_config=config
        )
    return [model.tokenizer.ids_to_text([int(t) for t in row.tolist()]) for row in answers]


@contextlib.contextmanager
def _no_grad() -> Iterator[None]:
    import torch

    with torch.no_grad():
        yield


# --- HTTP ------------------------------------------------------------------------------------------------


def serve(port: int, data_dir: Path, threads: int) -> None:
    """The server half (run in a subprocess): the real app, engines in this process, timed."""
    import uvicorn

    from talkies.api.app import create_app
    from talkies.engines import create_engine
    from talkies.settings import load_settings

    registry = data_dir / "models.json"
    registry.write_text(json.dumps({"models": dict(REGISTRY.values())}))
    timed = EngineSeconds(create_engine)
    settings = load_settings(
        models_file=registry,
        data_dir=data_dir,
        cpu_threads=threads,
        device="cpu",
        max_loaded_models=len(REGISTRY),
        nemo_batch_size=HTTP_BATCH,
        sweeper_interval=0,
    )
    app = create_app(settings, engine_factory=timed)
    timed.add_route(app)
    logging.disable(logging.ERROR)  # NeMo logs a harmless class-lookup ERROR while restoring Canary
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def server(data_dir: Path, threads: int, executors: list[str]) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if "canary_salm" in executors:
        env["HF_HUB_CACHE"] = str(llm_cache())
    argv = [sys.executable, __file__, "--serve", str(port), str(data_dir), str(threads)]
    with server_process(argv, port, env=env, timeout=120) as url:
        yield url


def http_call(client: Any, url: str, executor: str, path: Path) -> Callable[[], object]:
    data = path.read_bytes()
    form = {"model": REGISTRY[executor][0], "language": "en", "response_format": "json"}

    def call() -> object:
        response = client.post(
            f"{url}/v1/audio/transcriptions", data=form, files={"file": (path.name, data, "audio/wav")}
        )
        response.raise_for_status()
        return response.json()

    return call


def overhead(executors: list[str], data_dir: Path, runs: int, threads: int) -> None:
    import httpx

    clips = {
        "8 s": write_wav(data_dir / "8s.wav", speech_clip(8.0)),
        "60 s": write_wav(data_dir / "60s.wav", long_speech(60.0).audio),
    }
    engines = {
        executor: make_engine(executor, install(executor, data_dir), threads, HTTP_BATCH)
        for executor in executors
    }
    times: dict[tuple[str, str, str], list[float]] = {}
    outside: dict[tuple[str, str], list[float]] = {}
    with server(data_dir, threads, executors) as url, httpx.Client(timeout=900) as client:
        calls: dict[tuple[str, str, str], Callable[[], object]] = {}
        for executor in executors:
            for clip, path in clips.items():
                calls[(executor, clip, "direct")] = direct_call(executor, engines[executor], path, HTTP_BATCH)
                calls[(executor, clip, "HTTP")] = http_call(client, url, executor, path)
        for call in calls.values():  # warm-up: the first HTTP call per model loads it
            call()
        engine_seconds(client, url)  # drop the warm-up's
        times = {key: [] for key in calls}
        for round_ in range(runs):  # each pair alternates which side goes first
            order = list(calls.items())
            if round_ % 2:
                order = [item for pair in zip(order[1::2], order[::2], strict=True) for item in pair]
            for key, call in order:
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
                if key[2] == "HTTP":
                    outside.setdefault(key[:2], []).append(times[key][-1] - engine_seconds(client, url))
    for engine in engines.values():
        engine.unload()
    print(f"\n## overhead (tiny models, {threads} thread(s), median of {runs}, batch {HTTP_BATCH})")
    print("| executor | clip | NeMo direct | talkies HTTP | ratio | extra | talkies outside the engine |")
    print("|---|---|---|---|---|---|---|")
    for executor in executors:
        for clip in clips:
            d = statistics.median(times[(executor, clip, "direct")])
            h = statistics.median(times[(executor, clip, "HTTP")])
            own = statistics.median(outside[(executor, clip)])
            print(
                f"| `{executor}` | {clip} | {d * 1000:.0f} ms | {h * 1000:.0f} ms | {h / d:.3f} |"
                f" {(h - d) * 1000:+.0f} ms | {own * 1000:.0f} ms |"
            )
    print("\nall runs (ms): ")
    for key, values in times.items():
        print(f"- {' / '.join(key)}: {[round(v * 1000) for v in values]}")


# --- long file -------------------------------------------------------------------------------------------


def long_file(
    executors: list[str], data_dir: Path, threads: int, minutes: float, batches: list[int], repeat: int
) -> None:
    speech = long_speech(minutes * 60)
    start = time.perf_counter()
    regions = vad(speech.audio)
    vad_s = time.perf_counter() - start
    seconds = len(speech.audio) / SAMPLE_RATE
    longest = max(r.end - r.start for r in regions)
    print(
        f"\n## long file ({seconds:.0f} s, {len(regions)} VAD regions of at most {longest:.1f} s, VAD"
        f" {vad_s:.1f} s not included; {threads} thread(s), median of {repeat})"
    )
    print(
        "| executor | "
        + " | ".join(f"batch {b} audio-s/s" for b in batches)
        + " | best / batch 1 | runs (s) |"
    )
    print("|---|" + "---|" * (len(batches) + 2))
    for executor in executors:
        model_dir = install(executor, data_dir)
        engines = [make_engine(executor, model_dir, threads, batch) for batch in batches]
        request = TranscriptionRequest(audio=speech.audio, language="en", regions=regions)
        engines[0].transcribe(TranscriptionRequest(audio=speech.audio[: 5 * SAMPLE_RATE], language="en"))
        runs: list[list[float]] = [[] for _ in batches]
        for _ in range(repeat):
            for index, engine in enumerate(engines):
                begin = time.perf_counter()
                engine.transcribe(request)
                runs[index].append(time.perf_counter() - begin)
        for engine in engines:
            engine.unload()
        speeds = [seconds / statistics.median(r) for r in runs]
        cells = " | ".join(f"{s:.1f}" for s in speeds)
        all_runs = "; ".join(", ".join(f"{v:.1f}" for v in r) for r in runs)
        print(f"| `{executor}` | {cells} | {max(speeds) / speeds[0]:.2f} | {all_runs} |")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="overhead,long")
    parser.add_argument("--executors", default=",".join(REGISTRY))
    parser.add_argument("--runs", type=int, default=5, help="rounds of the overhead part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the long file")
    parser.add_argument("--batches", default="1,4,16", help="nemo_batch_size values of the long part")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the long part")
    args = parser.parse_args()
    if importlib.util.find_spec("nemo") is None:
        print("nemo_overhead: NeMo is not installed (pip install 'talkies[nemo]'); skipped")
        return
    executors = [e for e in args.executors.split(",") if e]
    unknown = set(executors) - set(REGISTRY)
    if unknown:
        parser.error(f"unknown executors {sorted(unknown)}; known: {', '.join(REGISTRY)}")
    if "canary_salm" in executors:
        import huggingface_hub.constants

        # The SALM's LLM config + tokenizer, where `talkies pull` leaves them (the Hugging Face cache)
        huggingface_hub.constants.HF_HUB_CACHE = str(llm_cache())
    os.environ["HF_HUB_OFFLINE"] = "1"
    logging.disable(logging.ERROR)  # NeMo logs a harmless class-lookup ERROR while restoring Canary
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "overhead" in parts:
            overhead(executors, Path(tmp), args.runs, args.threads)
        if "long" in parts:
            batches = [int(b) for b in args.batches.split(",")]
            long_file(executors, Path(tmp), args.threads, args.minutes, batches, args.repeat)


if __name__ == "__main__":
    main()
