"""`response_format=diarized_json` through the official `openai` client on a real uvicorn socket, with the
real pocketsphinx engine on espeak-ng speech: a speaker per channel of a stereo file (`A` / `B`, or
`known_speaker_names[]` in channel order), a mono file as speaker `A`, streamed `transcript.text.segment`
events, and the refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai.types.audio import TranscriptionDiarized, TranscriptionTextSegmentEvent

from talkies.api.app import create_app
from tests.api.audio_helpers import (
    SENTENCE_A,
    SENTENCE_B,
    silence,
    speak,
    weightfree_settings,
    word_overlap,
    write_wav,
)
from tests.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]

MODEL = "pocketsphinx-en-us"


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Left speaks A, then right speaks B (the other channel silent meanwhile)."""
    tmp = tmp_path_factory.mktemp("diarized-audio")
    a, b = speak(SENTENCE_A), speak(SENTENCE_B)
    gap = silence(0.5)
    left = np.concatenate([a, gap, np.zeros_like(b)])
    right = np.concatenate([np.zeros_like(a), gap, b])
    return {
        "stereo": write_wav(tmp / "stereo.wav", [left, right]),
        "mono": write_wav(tmp / "mono.wav", [a]),
        "three": write_wav(tmp / "three.wav", [a, a, a]),
    }


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(create_app(weightfree_settings(tmp_path_factory.mktemp("diarized-server")))) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=300, max_retries=0)


def diarize(sdk: openai.OpenAI, path: Path, **kwargs: Any) -> TranscriptionDiarized:
    with path.open("rb") as f:
        return sdk.audio.transcriptions.create(model=MODEL, file=f, response_format="diarized_json", **kwargs)


@pytest.fixture(scope="module")
def named(sdk: openai.OpenAI, audio: dict[str, Path]) -> TranscriptionDiarized:
    return diarize(sdk, audio["stereo"], known_speaker_names=["agent"])


def test_stereo_channels_are_speakers_a_and_b(sdk: openai.OpenAI, audio: dict[str, Path]) -> None:
    body = diarize(sdk, audio["stereo"])
    assert isinstance(body, TranscriptionDiarized)
    assert body.task == "transcribe"
    assert body.duration == pytest.approx(
        (len(speak(SENTENCE_A)) + len(speak(SENTENCE_B))) / 16_000 + 0.5, abs=0.05
    )
    assert body.usage is not None
    assert body.usage.type == "duration"
    speakers = [segment.speaker for segment in body.segments]
    assert set(speakers) == {"A", "B"}
    assert speakers == sorted(speakers)  # A spoke first: merged by start time
    said = {speaker: " ".join(s.text for s in body.segments if s.speaker == speaker) for speaker in "AB"}
    assert word_overlap(SENTENCE_A, said["A"]) >= 0.6, said
    assert word_overlap(SENTENCE_B, said["B"]) >= 0.6, said
    assert [line[:3] for line in body.text.splitlines()] == ["A: ", "B: "], body.text
    for segment in body.segments:
        assert segment.type == "transcript.text.segment"
        assert 0 <= segment.start <= segment.end <= body.duration
    assert [s.start for s in body.segments] == sorted(s.start for s in body.segments)
    assert len({s.id for s in body.segments}) == len(body.segments)
    b_start = min(s.start for s in body.segments if s.speaker == "B")
    assert b_start >= len(speak(SENTENCE_A)) / 16_000  # B's times are B's place in the file


def test_known_speaker_names_label_channels_in_order(named: TranscriptionDiarized) -> None:
    assert {s.speaker for s in named.segments} == {"agent", "B"}  # an unnamed channel keeps its letter
    agent = " ".join(s.text for s in named.segments if s.speaker == "agent")
    assert word_overlap(SENTENCE_A, agent) >= 0.6, named
    assert named.text.splitlines()[0].startswith("agent: ")


def test_mono_is_one_speaker_a(sdk: openai.OpenAI, audio: dict[str, Path]) -> None:
    body = diarize(sdk, audio["mono"])
    assert {s.speaker for s in body.segments} == {"A"}
    assert body.text.startswith("A: ")
    assert word_overlap(SENTENCE_A, body.text) >= 0.6
    solo = diarize(sdk, audio["mono"], known_speaker_names=["solo"])
    assert {s.speaker for s in solo.segments} == {"solo"}


def test_stream_sends_segment_events_then_done(
    sdk: openai.OpenAI, audio: dict[str, Path], named: TranscriptionDiarized
) -> None:
    with audio["stereo"].open("rb") as f:
        stream = sdk.audio.transcriptions.create(
            model=MODEL, file=f, response_format="diarized_json", stream=True, known_speaker_names=["agent"]
        )
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done"
    assert set(kinds[:-1]) == {"transcript.text.segment"}, kinds
    segments = [event for event in events if isinstance(event, TranscriptionTextSegmentEvent)]
    # channel by channel as decoded; the same segments (ids too) as the plain answer
    assert [s.speaker for s in segments] == sorted((s.speaker for s in segments), key=["agent", "B"].index)
    by_id = sorted(named.segments, key=lambda s: s.id)
    assert [s.model_dump() for s in sorted(segments, key=lambda s: s.id)] == [s.model_dump() for s in by_id]
    done = events[-1]
    assert done.text == named.text
    assert done.usage is not None
    assert done.usage.type == "duration"


def error_of(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert isinstance(caught.value.body, dict)
    return caught.value.body


@pytest.mark.parametrize(
    ("clip", "kwargs", "param", "says"),
    [
        ("mono", {"known_speaker_names": ["agent", "customer"]}, "known_speaker_names", "1 channel"),
        ("stereo", {"known_speaker_names": ["a", "b", "c"]}, "known_speaker_names", "at most 2"),
        ("stereo", {"known_speaker_names": ["agent", "agent"]}, "known_speaker_names", "distinct"),
        ("three", {}, "response_format", "3-channel"),
        (
            "stereo",
            {"known_speaker_references": ["data:audio/wav;base64,AAAA"]},
            "known_speaker_references",
            "channels",
        ),
    ],
)
def test_refusals(
    sdk: openai.OpenAI, audio: dict[str, Path], clip: str, kwargs: dict[str, Any], param: str, says: str
) -> None:
    body = error_of(lambda: diarize(sdk, audio[clip], **kwargs))
    assert body["param"] == param
    assert says in body["message"]


def test_names_need_diarized_json(sdk: openai.OpenAI, audio: dict[str, Path]) -> None:
    def plain() -> object:
        with audio["stereo"].open("rb") as f:
            return sdk.audio.transcriptions.create(model=MODEL, file=f, known_speaker_names=["agent"])

    body = error_of(plain)
    assert body["param"] == "known_speaker_names"
    assert "diarized_json" in body["message"]


def test_streamed_wire_is_data_only_without_deltas(base_url: str, audio: dict[str, Path]) -> None:
    with audio["mono"].open("rb") as f:
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            data={"model": MODEL, "stream": "true", "response_format": "diarized_json"},
            files={"file": ("a.wav", f)},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), response.text
    assert "transcript.text.delta" not in response.text
    assert response.text.count('"transcript.text.segment"') >= 1
