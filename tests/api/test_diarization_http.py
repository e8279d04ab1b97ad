"""Acoustic speaker diarization in `diarized_json` (docs/diarization.md), end to end on a real uvicorn socket:
the real pocketsphinx engine transcribes, the real sherpa-onnx diarizer runs the tiny handcrafted ONNX pair
(tests/fixtures/diarization.py) on espeak-ng conversations, through the official `openai` client and raw
HTTP; known speakers by voice sample, every 400, a 2.5 MB reference."""

from __future__ import annotations

import base64
import io
import os
import wave
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai.types.audio import TranscriptionDiarized, TranscriptionTextSegmentEvent

from talkies.api.app import create_app
from tests.api.audio_helpers import weightfree_settings
from tests.fixtures.diarization import (
    FEMALE,
    LINES,
    MALE,
    THIRD,
    Conversation,
    build_tiny_snapshot,
    conversation,
)
from tests.fixtures.speech import espeak, write_wav
from tests.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]

ASR = "pocketsphinx-en-us"
DIARIZER = "tiny-diarizer"
TOLERANCE = 0.5


def diarization_settings(tmp: Path, **overrides: Any) -> Any:
    import json

    tmp.mkdir(parents=True, exist_ok=True)
    registry = tmp / "diarization-models.json"
    registry.write_text(
        json.dumps(
            {
                "models": {
                    ASR: {"executor": "pocketsphinx"},
                    DIARIZER: {"executor": "sherpa_diarization", "repo": "local/tiny-diarizer"},
                }
            }
        )
    )
    build_tiny_snapshot(tmp / "data" / "models" / DIARIZER)
    return weightfree_settings(tmp, models_file=registry, **overrides)


@pytest.fixture(scope="module")
def two() -> Conversation:
    return conversation((MALE, FEMALE))


@pytest.fixture(scope="module")
def three() -> Conversation:
    return conversation((MALE, FEMALE, THIRD), LINES[:3])


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, two: Conversation, three: Conversation
) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("diarization-audio")
    stereo = np.stack([two.audio, two.audio], axis=1)
    return {
        "two": write_wav(tmp / "two.wav", two.audio),
        "three": write_wav(tmp / "three.wav", three.audio),
        "stereo": write_wav(tmp / "stereo.wav", stereo, channels=2),
    }


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = diarization_settings(tmp_path_factory.mktemp("diarization-server"))
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=900, max_retries=0)


def wav_data_url(audio: np.ndarray, rate: int = 16_000, channels: int = 1) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def diarize(sdk: openai.OpenAI, path: Path, **kwargs: Any) -> TranscriptionDiarized:
    with path.open("rb") as f:
        body = sdk.audio.transcriptions.create(model=ASR, file=f, response_format="diarized_json", **kwargs)
    assert isinstance(body, TranscriptionDiarized)
    return body


def runs(segments: list[Any]) -> list[tuple[str, float, float]]:
    """(speaker, start, end) of each run of consecutive segments of one speaker."""
    out = []
    for speaker, group in groupby(segments, key=lambda s: s.speaker):
        items = list(group)
        out.append((speaker, items[0].start, items[-1].end))
    return out


def assert_turns(segments: list[Any], truth: Conversation, speakers: list[str]) -> None:
    """One run of segments per spoken line, labelled `speakers`, each inside its line (give or take
    TOLERANCE). The runs' edges are the ASR's word times (pocketsphinx may miss a line's first word); the
    diarizer's own turn boundaries are checked in tests/engines/test_diarization.py."""
    found = runs(segments)
    assert [speaker for speaker, _, _ in found] == speakers, found
    for (_, start, end), (true_start, true_end, _) in zip(found, truth.turns, strict=True):
        assert true_start - TOLERANCE <= start < end <= true_end + TOLERANCE, (found, truth.turns)


def test_mono_conversation_is_four_turns_of_two_speakers(
    sdk: openai.OpenAI, files: dict[str, Path], two: Conversation
) -> None:
    body = diarize(sdk, files["two"], extra_body={"num_speakers": 2})
    assert_turns(body.segments, two, ["A", "B", "A", "B"])
    assert body.duration == pytest.approx(two.duration, abs=0.05)
    assert [line.split(":")[0] for line in body.text.splitlines()] == ["A", "B", "A", "B"]
    assert len({segment.id for segment in body.segments}) == len(body.segments)


def test_speaker_count_found_by_clustering(
    sdk: openai.OpenAI, files: dict[str, Path], two: Conversation
) -> None:
    body = diarize(sdk, files["two"])
    assert_turns(body.segments, two, ["A", "B", "A", "B"])
    bounded = diarize(sdk, files["two"], extra_body={"min_speakers": 1, "max_speakers": 2})
    assert [s.speaker for s in bounded.segments] == [s.speaker for s in body.segments]


def test_one_speaker_when_asked(sdk: openai.OpenAI, files: dict[str, Path]) -> None:
    assert {segment.speaker for segment in diarize(sdk, files["two"]).segments} == {"A", "B"}
    body = diarize(sdk, files["two"], extra_body={"max_speakers": 1})
    assert {segment.speaker for segment in body.segments} == {"A"}


@pytest.mark.parametrize("hint", [{"min_speakers": 3}, {"min_speakers": 3, "max_speakers": 3}])
def test_min_speakers_reclusters_to_more_speakers(
    sdk: openai.OpenAI, files: dict[str, Path], two: Conversation, hint: dict[str, int]
) -> None:
    """Clustering finds two voices on its own (above); `min_speakers=3` clusters again and answers three.
    The tiny pair's embeddings tell the two lines of one voice apart well enough for a third cluster to
    take one of them, so the four turns stay where they are, now with three labels."""
    body = diarize(sdk, files["two"], extra_body=hint)
    labels = [speaker for speaker, _, _ in runs(body.segments)]
    assert sorted(set(labels)) == ["A", "B", "C"], labels
    assert_turns(body.segments, two, labels)


def test_streamed_segment_events_match_the_answer(sdk: openai.OpenAI, files: dict[str, Path]) -> None:
    whole = diarize(sdk, files["two"], extra_body={"num_speakers": 2})
    with files["two"].open("rb") as f:
        stream = sdk.audio.transcriptions.create(
            model=ASR, file=f, response_format="diarized_json", stream=True, extra_body={"num_speakers": 2}
        )
        events = list(stream)
    segments = [event for event in events if isinstance(event, TranscriptionTextSegmentEvent)]
    assert [(s.id, s.speaker, s.start, s.end, s.text) for s in segments] == [
        (s.id, s.speaker, s.start, s.end, s.text) for s in whole.segments
    ]
    assert events[-1].type == "transcript.text.done"
    assert events[-1].text == whole.text


def test_chunking_strategy_keeps_speakers(
    sdk: openai.OpenAI, files: dict[str, Path], two: Conversation
) -> None:
    body = diarize(sdk, files["two"], chunking_strategy="auto", extra_body={"num_speakers": 2})
    assert_turns(body.segments, two, ["A", "B", "A", "B"])


def test_known_speakers_by_sample_and_an_unknown_voice(
    sdk: openai.OpenAI, files: dict[str, Path], three: Conversation
) -> None:
    references = [wav_data_url(espeak(LINES[3], MALE)), wav_data_url(espeak(LINES[2], FEMALE))]
    body = diarize(
        sdk,
        files["three"],
        extra_body={"known_speaker_names": ["agent", "customer"], "known_speaker_references": references},
    )
    assert_turns(body.segments, three, ["agent", "customer", "A"])
    assert body.text.splitlines()[0].startswith("agent: ")


def test_stereo_keeps_channels_unless_acoustic(
    sdk: openai.OpenAI, files: dict[str, Path], two: Conversation
) -> None:
    channels = diarize(sdk, files["stereo"])
    assert {segment.speaker for segment in channels.segments} == {"A", "B"}
    assert channels.segments[0].id.startswith("seg_A_")  # a channel's segments
    voices = diarize(sdk, files["stereo"], extra_body={"acoustic_diarization": True, "num_speakers": 2})
    assert_turns(voices.segments, two, ["A", "B", "A", "B"])


def test_a_2_5_mb_reference_is_accepted(
    sdk: openai.OpenAI, files: dict[str, Path], three: Conversation
) -> None:
    """10 s of 48 kHz stereo 16-bit WAV: 1.92 MB, 2.56 MB as a data URL (Starlette's own limit is 1 MiB)."""
    male = espeak(" ".join(LINES[2:4]), MALE)[: 10 * 16_000]
    rate = 48_000
    upsampled = np.interp(np.arange(10 * rate) / rate, np.arange(len(male)) / 16_000, male, right=0.0)
    big = wav_data_url(np.repeat(upsampled, 2).astype(np.float32), rate=rate, channels=2)
    assert len(big) > 2_500_000
    small = wav_data_url(espeak(LINES[2], FEMALE))
    body = diarize(
        sdk,
        files["three"],
        extra_body={"known_speaker_names": ["agent", "customer"], "known_speaker_references": [big, small]},
    )
    assert [speaker for speaker, _, _ in runs(body.segments)] == ["agent", "customer", "A"]


def form(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    """httpx's multipart `data`: repeated keys as lists."""
    out: dict[str, list[str]] = {}
    for key, value in fields:
        out.setdefault(key, []).append(value)
    return out


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("five references", {"refs": 5}, "at most 4"),
    ("names without references on mono", {"names": ["agent"]}, "pair each known_speaker_names"),
    ("more names than references", {"refs": 1, "names": ["a", "b"]}, "pair up one to one"),
    ("same name twice", {"refs": 2, "names": ["a", "a"]}, "distinct"),
    ("short reference", {"refs": 1, "ref_seconds": 1.0}, "must be 2-10 s"),
    ("long reference", {"refs": 1, "ref_seconds": 12.0}, "10 s"),
    ("not a data URL", {"raw_ref": "https://example.com/a.wav"}, "must be a data URL"),
    ("bad base64", {"raw_ref": "data:audio/wav;base64,@@@"}, "not valid base64"),
    (
        "not audio",
        {"raw_ref": "data:audio/wav;base64," + base64.b64encode(b"hello" * 100).decode()},
        "not audio",
    ),
    ("prompt", {"data": {"prompt": "hello"}}, "Prompt is not supported"),
    ("references without diarized_json", {"refs": 1, "format": "json"}, "need response_format=diarized_json"),
    ("zero speakers", {"data": {"num_speakers": "0"}}, "between 1 and 32"),
    ("not a number", {"data": {"max_speakers": "two"}}, "whole number"),
    ("min over max", {"data": {"min_speakers": "3", "max_speakers": "2"}}, "more than max_speakers"),
    ("min_speakers zero", {"data": {"min_speakers": "0"}}, "min_speakers must be between 1 and 32, got 0"),
    ("max_speakers over 32", {"data": {"max_speakers": "33"}}, "max_speakers must be between 1 and 32"),
    ("count and bounds", {"data": {"num_speakers": "2", "min_speakers": "1"}}, "not both"),
    ("stereo references", {"refs": 1, "file": "stereo"}, "acoustic_diarization=true"),
    (
        "channels and references",
        {"refs": 1, "file": "stereo", "data": {"diarization": "true"}},
        "not diarization=true",
    ),
]


@pytest.mark.parametrize(("case", "spec", "message"), REFUSALS, ids=[case for case, _, _ in REFUSALS])
def test_refusals_name_the_rule(
    base_url: str, files: dict[str, Path], case: str, spec: dict[str, Any], message: str
) -> None:
    seconds = spec.get("ref_seconds", 3.0)
    sample = np.tile(espeak(LINES[0], MALE), 4)[: int(seconds * 16_000)]
    references = [wav_data_url(sample)] * spec.get("refs", 0)
    if "raw_ref" in spec:
        references = [spec["raw_ref"]]
    names = spec.get("names", [f"speaker{i}" for i in range(len(references))])
    data: list[tuple[str, str]] = [("model", ASR), ("response_format", spec.get("format", "diarized_json"))]
    data += [("known_speaker_names[]", name) for name in names]
    data += [("known_speaker_references[]", ref) for ref in references]
    data += list(spec.get("data", {}).items())
    with files[spec.get("file", "two")].open("rb") as f:
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions", data=form(data), files={"file": ("a.wav", f)}, timeout=300
        )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    hint = next((field for field in spec.get("data", {}) if field.endswith("_speakers")), None)
    if hint is not None:  # a speaker-count refusal names its field
        assert response.json()["error"]["param"] == hint


def test_a_reference_over_the_field_limit_is_refused(base_url: str, files: dict[str, Path]) -> None:
    huge = "data:audio/wav;base64," + "A" * (8 * 1024 * 1024 + 10)
    data = [("model", ASR), ("response_format", "diarized_json"), ("known_speaker_names[]", "a")]
    data.append(("known_speaker_references[]", huge))
    with files["two"].open("rb") as f:
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions", data=form(data), files={"file": ("a.wav", f)}, timeout=300
        )
    assert response.status_code == 400
    assert "known_speaker_references[]" in response.json()["error"]["message"]


def test_other_text_fields_keep_the_64_kib_limit(base_url: str, files: dict[str, Path]) -> None:
    data = [("model", ASR), ("response_format", "diarized_json"), ("language", "x" * (70 * 1024))]
    with files["two"].open("rb") as f:
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions", data=form(data), files={"file": ("a.wav", f)}, timeout=300
        )
    assert response.status_code == 400
    assert "'language' is over 65536 bytes" in response.json()["error"]["message"]


def test_diarizer_in_a_worker_process(tmp_path: Path, files: dict[str, Path], two: Conversation) -> None:
    """The default isolation: the diarizer runs in its own worker process (talkies.workers.diarizer)."""
    settings = diarization_settings(tmp_path, engine_isolation="process")
    with serve(create_app(settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=300, max_retries=0)
        body = diarize(client, files["two"], extra_body={"num_speakers": 2})
        ps = httpx.get(f"{url}/api/ps", timeout=30).json()
    assert_turns(body.segments, two, ["A", "B", "A", "B"])
    rows = {row["model"]: row for row in ps["models"]}
    assert rows[DIARIZER]["modality"] == "diarization"
    assert rows[DIARIZER]["loaded"]
    assert rows[DIARIZER]["pid"] != os.getpid()  # its own worker process
