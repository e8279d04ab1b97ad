"""TranscriptionService orchestration with a recording engine (API shape; real engines in tests/api)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import talkies.services.transcription as transcription_module
from talkies.engines.base import (
    EngineContext,
    Region,
    Segment,
    TranscriptionRequest,
    TranscriptionResult,
    Word,
)
from talkies.errors import (
    BadRequestError,
    CapabilityError,
    DiarizationError,
    ModelNotFoundError,
    UnsupportedFormatError,
    WrongModalityError,
)
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, load_registry
from talkies.services.streams import open_transcript_stream
from talkies.services.transcription import TranscriptionOptions, TranscriptionService
from talkies.settings import Settings
from tests.api.audio_helpers import write_wav

pytestmark = pytest.mark.anyio

RATE = 16_000


class RecordingEngine:
    """Answers one word per call at 0.1-0.3 s of its input, and keeps every request."""

    can_translate = False

    def __init__(self, spec: ModelSpec, context: EngineContext, batches: bool) -> None:
        self.batches_regions = batches
        self.requests: list[TranscriptionRequest] = []

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        self.requests.append(request)
        word = Word(f" w{len(self.requests)}", 0.1, 0.3)
        return TranscriptionResult(
            text=word.word,
            language=None,
            duration=len(request.audio) / RATE,
            segments=[Segment(0.1, 0.3, word.word, words=[word])],
        )


@pytest.fixture
def setup(make_settings: Callable[..., Settings]) -> Callable[..., tuple[TranscriptionService, list[Any]]]:
    def make(batches: bool = False, **overrides: Any) -> tuple[TranscriptionService, list[Any]]:
        settings = make_settings(**overrides)
        engines: list[RecordingEngine] = []

        def factory(spec: ModelSpec, context: EngineContext) -> RecordingEngine:
            engines.append(RecordingEngine(spec, context, batches))
            return engines[-1]

        assert settings.models_file is not None
        registry = load_registry(settings.models_file)
        pool = ModelPool(registry, settings, engine_factory=factory)
        return TranscriptionService(pool, registry, settings), engines

    return make


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def test_fields_reach_the_engine(setup: Any, tmp_path: Path) -> None:
    service, engines = setup()
    # the fakes stand in for pocketsphinx, which honours neither prompt nor temperature (a 400 since
    # issue 11): declare an engine that does
    service.request_options = lambda spec: frozenset({"prompt", "temperature"})
    path = write_wav(tmp_path / "a.wav", [tone(1.0)])
    options = TranscriptionOptions(
        model="asr-a", response_format="verbose_json", language="en", prompt="hint", temperature=0.4
    )
    transcript = await service.transcribe_file(path, options)
    (request,) = engines[0].requests
    assert (request.language, request.prompt, request.temperature, request.task) == (
        "en",
        "hint",
        0.4,
        "transcribe",
    )
    assert request.regions is None
    assert len(request.audio) == RATE
    assert transcript.result.language == "en"
    assert transcript.content_type == "application/json"


@pytest.mark.parametrize("batches", [False, True])
async def test_long_audio_goes_through_vad_regions(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batches: bool
) -> None:
    regions = [Region(0.5, 2.0), Region(5.0, 7.5)]
    seen: list[int] = []

    def fake_regions(pcm: np.ndarray, options: Any) -> list[Region]:
        seen.append(len(pcm))
        assert options.max_speech_s == 5.0
        return regions

    monkeypatch.setattr(transcription_module, "speech_regions", fake_regions)
    service, engines = setup(batches=batches, vad_chunk_threshold=3.0, vad_max_speech=5.0)
    path = write_wav(tmp_path / "long.wav", [tone(8.0)])
    transcript = await service.transcribe_file(path, TranscriptionOptions(model="asr-a"))
    requests = engines[0].requests
    assert seen == [8 * RATE]
    if batches:
        assert len(requests) == 1
        assert requests[0].regions == tuple(regions)
        assert len(requests[0].audio) == 8 * RATE
    else:
        assert [len(r.audio) for r in requests] == [int(1.5 * RATE), int(2.5 * RATE)]
        assert all(r.regions is None for r in requests)
        starts = [s.start for s in transcript.result.segments]
        assert starts == pytest.approx([0.6, 5.1])  # per-region times shifted to absolute ones
        assert transcript.result.duration == pytest.approx(8.0)


async def test_short_audio_skips_vad(setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_vad(*_: Any) -> list[Region]:
        raise AssertionError("VAD ran on a short clip")

    monkeypatch.setattr(transcription_module, "speech_regions", no_vad)
    service, _ = setup(vad_chunk_threshold=3.0)
    path = write_wav(tmp_path / "short.wav", [tone(2.0)])
    await service.transcribe_file(path, TranscriptionOptions(model="asr-a"))


async def test_no_speech_means_no_engine_call(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcription_module, "speech_regions", lambda *_: [])
    service, engines = setup(vad_chunk_threshold=1.0)
    path = write_wav(tmp_path / "quiet.wav", [np.zeros(3 * RATE, dtype=np.float32)])
    transcript = await service.transcribe_file(path, TranscriptionOptions(model="asr-a"))
    assert transcript.result.text == ""
    assert engines == [] or engines[0].requests == []


async def test_diarization_runs_each_channel(setup: Any, tmp_path: Path) -> None:
    service, engines = setup()
    path = write_wav(tmp_path / "st.wav", [tone(1.0), tone(1.0) * 0.5])
    transcript = await service.transcribe_file(path, TranscriptionOptions(model="asr-a", diarization=True))
    assert len(engines[0].requests) == 2
    assert transcript.result.text.splitlines() == ["L: w1", "R: w2"]


async def test_refusals_come_before_the_audio_is_read(setup: Any, tmp_path: Path) -> None:
    service, engines = setup()
    missing = tmp_path / "never-read.wav"  # does not exist: any read would fail differently
    for options, error in [
        (TranscriptionOptions(model="nope"), ModelNotFoundError),
        (TranscriptionOptions(model="tts-a"), WrongModalityError),
        (TranscriptionOptions(model="asr-a", response_format="docx"), UnsupportedFormatError),
        (TranscriptionOptions(model="asr-a", task="translate"), CapabilityError),
    ]:
        with pytest.raises(error):
            await service.transcribe_file(missing, options)
    assert engines == []
    mono = write_wav(tmp_path / "mono.wav", [tone(1.0)])
    with pytest.raises(DiarizationError):
        await service.transcribe_file(mono, TranscriptionOptions(model="asr-a", diarization=True))
    assert engines == []


# --- diarized_json -------------------------------------------------------------------------------


async def test_diarized_json_is_a_speaker_per_channel(setup: Any, tmp_path: Path) -> None:
    service, engines = setup()
    stereo = write_wav(tmp_path / "st.wav", [tone(1.0), tone(1.0) * 0.5])
    options = TranscriptionOptions(model="asr-a", response_format="diarized_json", speaker_names=("agent",))
    transcript = await service.transcribe_file(stereo, options)
    body = json.loads(transcript.body)
    assert transcript.content_type == "application/json"
    assert len(engines[0].requests) == 2
    assert [(s["speaker"], s["text"]) for s in body["segments"]] == [("agent", "w1"), ("B", "w2")]
    assert body["text"] == "agent: w1\nB: w2"
    mono = write_wav(tmp_path / "mono.wav", [tone(1.0)])
    plain = TranscriptionOptions(model="asr-a", response_format="diarized_json")
    body = json.loads((await service.transcribe_file(mono, plain)).body)
    assert [s["speaker"] for s in body["segments"]] == ["A"]
    assert body["text"] == "A: w3"


async def test_diarized_json_refusals(setup: Any, tmp_path: Path) -> None:
    service, engines = setup()
    missing = tmp_path / "never-read.wav"
    diarized = TranscriptionOptions(model="asr-a", response_format="diarized_json")
    for options, param in [
        (replace(diarized, speaker_names=("a", "b", "c")), "known_speaker_names"),
        (replace(diarized, speaker_names=("x", "x")), "known_speaker_names"),
        (replace(diarized, speaker_names=("B",)), "known_speaker_names"),  # would repeat channel 2's letter
        (replace(diarized, speaker_names=("a\nb",)), "known_speaker_names"),
        (TranscriptionOptions(model="asr-a", speaker_names=("agent",)), "known_speaker_names"),
    ]:
        with pytest.raises(BadRequestError) as caught:
            await service.transcribe_file(missing, options)
        assert caught.value.param == param, options
    mono = write_wav(tmp_path / "mono.wav", [tone(1.0)])
    with pytest.raises(BadRequestError) as caught:
        await service.transcribe_file(mono, replace(diarized, speaker_names=("a", "b")))
    assert "1 channel" in caught.value.message
    three = write_wav(tmp_path / "three.wav", [tone(1.0)] * 3)
    with pytest.raises(DiarizationError) as caught:
        await service.transcribe_file(three, diarized)
    assert "3-channel" in caught.value.message
    assert engines == []


async def test_streamed_diarized_json_sends_segments_then_done(setup: Any, tmp_path: Path) -> None:
    service, _ = setup()
    stereo = write_wav(tmp_path / "st.wav", [tone(1.0), tone(1.0) * 0.5])
    options = TranscriptionOptions(model="asr-a", response_format="diarized_json")
    stream = await open_transcript_stream(service, stereo, options)
    events = [json.loads(part.decode().removeprefix("data: ")) async for part in stream]
    plain = json.loads((await service.transcribe_file(stereo, options)).body)
    assert [e["type"] for e in events] == ["transcript.text.segment"] * 2 + ["transcript.text.done"]
    assert [e["speaker"] for e in events[:2]] == ["A", "B"]
    assert [(e["speaker"], e["start"], e["end"]) for e in events[:2]] == [
        (s["speaker"], s["start"], s["end"]) for s in plain["segments"]
    ]
    assert events[-1]["usage"] == {"type": "duration", "seconds": 1}
