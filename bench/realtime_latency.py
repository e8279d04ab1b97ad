"""Realtime transcription latency: from the end of speech in the stream to `...completed`, and from the start
of speech to the first `...delta`, per engine, against the engine's own time on the same audio.

One real `talkies serve` process (tests/live_server.py) with pocketsphinx (weight-free), and, when present,
Whisper base from the real-weight tier (`/work/shared/recipes/real-models/fetch.sh`, or TALKIES_REAL_MODELS
pointing at its output) and the random-weight Whisper "tiny" test model (real compute, not real words).
A raw websocket client configures the session as LiveKit Agents does (server VAD, threshold 0.5, prefix
600 ms, silence 350 ms) and streams espeak-ng sentences (each followed by 1.5 s of silence) as 24 kHz PCM16
in 50 ms appends, paced in real time. The moment "speech ended" is when the append holding the last
speech sample was sent; "speech started" likewise.

Columns (medians over all turns): `stop` = end of speech -> `speech_stopped` (the VAD must hear
`silence_duration_ms` of silence); `completed` = end of speech -> `completed`; `after stop` = `speech_stopped`
-> `completed`; `engine` = the same turn's audio through POST /v1/audio/transcriptions (the engine's own
time plus HTTP); `first delta` = start of speech -> the first `delta`. Goal: `after stop` within 300 ms +
`engine`.

    python bench/realtime_latency.py [--rounds 2] [--engines pocketsphinx,whisper-base,whisper-tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.api.audio_helpers import RATE  # noqa: E402
from tests.live.realtime_helpers import speak_at  # noqa: E402
from tests.live_server import live_server  # noqa: E402

from talkies.audio.encode import resample, to_int16  # noqa: E402

SENTENCES = (
    "The weather is nice today.",
    "Please call me tomorrow morning.",
    "Open the door and turn on the light.",
)
CHUNK = 1200  # samples of 24 kHz per append: 50 ms
SILENCE_MS = 350
UPDATE = {
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 600,
                    "silence_duration_ms": SILENCE_MS,
                },
            }
        },
    },
}


def stream_audio() -> tuple[np.ndarray, list[tuple[int, int]], list[bytes]]:
    """24 kHz int16 stream, each sentence's (start, end) sample, and each sentence as a 16 kHz WAV."""
    parts = [np.zeros(12_000, dtype=np.float32)]
    spans, wavs, at = [], [], 12_000
    for sentence in SENTENCES:
        spoken = speak_at(sentence)
        loud = np.flatnonzero(np.abs(spoken) > 0.01)  # espeak-ng pads its own silence: trim it
        spoken = spoken[loud[0] : loud[-1] + 1]
        spans.append((at, at + spoken.size))
        wavs.append(_wav(resample(np.concatenate([np.zeros(7200, np.float32), spoken]), 24_000, RATE)))
        parts += [spoken, np.zeros(36_000, dtype=np.float32)]  # 1.5 s of silence
        at += spoken.size + 36_000
    return to_int16(np.concatenate(parts)), spans, wavs


def _wav(pcm: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(to_int16(pcm).tobytes())
    return out.getvalue()


async def one_session(
    url: str, model: str, pcm: np.ndarray, spans: list[tuple[int, int]]
) -> list[dict[str, float]]:
    from websockets.asyncio.client import connect

    sent_at: dict[int, float] = {}
    received: list[tuple[float, dict[str, Any]]] = []
    ws_url = url.replace("http://", "ws://") + f"/v1/realtime?intent=transcription&model={model}"
    async with connect(ws_url, proxy=None, max_size=2**22) as ws:

        async def read() -> None:
            async for message in ws:
                event = json.loads(message)
                received.append((time.perf_counter(), event))
                if sum(e["type"].endswith("transcription.completed") for _, e in received) == len(spans):
                    return

        reader = asyncio.create_task(read())
        await ws.send(json.dumps(UPDATE))
        started = time.perf_counter()
        for index, at in enumerate(range(0, pcm.size, CHUNK)):
            await asyncio.sleep(max(0.0, started + index * 0.05 - time.perf_counter()))
            piece = base64.b64encode(pcm[at : at + CHUNK].astype("<i2").tobytes()).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
            sent_at[index] = time.perf_counter()
        await asyncio.wait_for(reader, 600)
    return _turn_times(received, spans, sent_at)


def _turn_times(
    received: list[tuple[float, dict[str, Any]]], spans: list[tuple[int, int]], sent_at: dict[int, float]
) -> list[dict[str, float]]:
    items: list[str] = []
    for _, event in received:
        if event["type"] == "input_audio_buffer.speech_started" and event["item_id"] not in items:
            items.append(event["item_id"])
    if len(items) != len(spans):
        raise RuntimeError(
            f"{len(items)} turns for {len(spans)} sentences: {[e['type'] for _, e in received]}"
        )
    turns = []
    for item, (start, end) in zip(items, spans, strict=True):
        mine = [(t, e) for t, e in received if e.get("item_id") == item]
        first = {e["type"].rsplit(".", 1)[-1]: t for t, e in reversed(mine)}
        speech_start, speech_end = sent_at[start // CHUNK], sent_at[end // CHUNK]
        turns.append(
            {
                "stop": first["speech_stopped"] - speech_end,
                "completed": first["completed"] - speech_end,
                "after_stop": first["completed"] - first["speech_stopped"],
                "first_delta": first["delta"] - speech_start,
                "delta_before_stop": float(first["delta"] < first["speech_stopped"]),
            }
        )
    return turns


def engine_seconds(client: httpx.Client, model: str, wavs: list[bytes]) -> list[float]:
    times = []
    for wav in wavs:
        started = time.perf_counter()
        response = client.post(
            "/v1/audio/transcriptions", data={"model": model}, files={"file": ("t.wav", wav)}
        )
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def models_for(names: list[str], data_dir: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    from tests.fixtures.cache import install_snapshot

    models: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name in names:
        if name == "pocketsphinx":
            models["pocketsphinx-en-us"] = {"executor": "pocketsphinx"}
        elif name == "whisper-base":
            real = Path(os.environ.get("TALKIES_REAL_MODELS", Path.home() / ".cache" / "real-models"))
            if not (real / "whisper-base" / "model.bin").exists():
                skipped.append(f"whisper-base: no {real}/whisper-base (run recipes/real-models/fetch.sh)")
                continue
            install_snapshot(real / "whisper-base", data_dir, "whisper-base")
            models["whisper-base"] = {
                "executor": "whisper",
                "repo": "Systran/faster-whisper-base",
                "compute_type": "int8",
            }
        elif name == "whisper-tiny":
            try:
                from tests.fixtures.whisper import build_whisper

                install_snapshot(build_whisper("tiny"), data_dir, "whisper-tiny")
            except Exception as exc:
                skipped.append(f"whisper-tiny: {type(exc).__name__}: {str(exc)[:100]}")
                continue
            models["whisper-tiny"] = {"executor": "whisper", "repo": "test/whisper-tiny"}
        else:
            raise SystemExit(f"unknown engine {name!r}")
    return models, skipped


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engines", default="pocketsphinx,whisper-base,whisper-tiny")
    parser.add_argument(
        "--delta-interval-ms",
        type=int,
        default=1000,
        help="TALKIES_REALTIME_DELTA_INTERVAL_MS (0: no partials)",
    )
    args = parser.parse_args()
    pcm, spans, wavs = stream_audio()
    with tempfile.TemporaryDirectory(prefix="talkies-bench-") as tmp:
        tmp_path = Path(tmp)
        models, skipped = models_for(args.engines.split(","), tmp_path / "live-data")
        env = {
            "TALKIES_SWEEPER_INTERVAL": "0",
            "TALKIES_DEVICE": "cpu",
            "TALKIES_REALTIME_DELTA_INTERVAL_MS": str(args.delta_interval_ms),
        }
        rows = []
        with (
            live_server(tmp_path, models, **env) as server,
            httpx.Client(base_url=server.url, timeout=900) as client,
        ):
            for model in models:
                engine_seconds(client, model, wavs[:1])  # load it
                turns: list[dict[str, float]] = []
                engine: list[float] = []
                for _ in range(args.rounds):
                    turns += asyncio.run(one_session(server.url, model, pcm, spans))
                    engine += engine_seconds(client, model, wavs)
                rows.append((model, turns, engine))
    load = os.getloadavg()[0]
    print(
        f"\n{len(SENTENCES)} sentences x {args.rounds} rounds, silence {SILENCE_MS} ms, "
        f"delta interval {args.delta_interval_ms} ms, load {load:.1f}\n"
    )
    print(
        "| engine | stop s | completed s | after stop s | engine s | after stop - engine s | first delta s "
        "| delta before stop |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model, turns, engine in rows:

        def median(key: str, turns: list[dict[str, float]] = turns) -> float:
            return statistics.median(t[key] for t in turns)

        engine_median = statistics.median(engine)
        before = sum(t["delta_before_stop"] for t in turns)
        print(
            f"| {model} | {median('stop'):.3f} | {median('completed'):.3f} | {median('after_stop'):.3f} | "
            f"{engine_median:.3f} | {median('after_stop') - engine_median:+.3f} | "
            f"{median('first_delta'):.3f} | {before:.0f}/{len(turns)} |"
        )
    for reason in skipped:
        print(f"skipped {reason}")


if __name__ == "__main__":
    main()
