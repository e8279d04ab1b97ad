"""Streamed transcriptions (`stream=true`, server-sent events) through the official `openai` client on a
real uvicorn socket: pocketsphinx in the server process and in a worker process, VAD regions as they
finish, `chunking_strategy` in both wire forms, strictness, and errors before / after the first byte."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import openai
import pytest

from talkies.api.app import create_app
from talkies.engines.base import (
    EngineContext,
    Segment,
    TranscriptionRequest,
    TranscriptionResult,
    drain,
)
from talkies.errors import EngineError
from talkies.registry import ModelSpec
from tests.api.audio_helpers import SENTENCE_A, SENTENCE_B, silence, speak, weightfree_settings, write_wav
from tests.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]

SPHINX = "pocketsphinx-en-us"
ISOLATED = "pocketsphinx-isolated"


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("stream-audio")
    a, b = speak(SENTENCE_A), speak(SENTENCE_B)
    return {
        "mono": write_wav(tmp / "mono.wav", [a]),
        "two": write_wav(tmp / "two.wav", [np.concatenate([silence(0.3), a, silence(1.2), b, silence(0.3)])]),
    }


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("stream-server")
    registry = {
        "models": {
            SPHINX: {"executor": "pocketsphinx", "aliases": ["whisper-1"]},
            ISOLATED: {"executor": "pocketsphinx", "isolation": "process"},
            "espeak-ng": {"executor": "espeak"},
        }
    }
    (tmp / "stream-models.json").write_text(json.dumps(registry))
    # TALKIES_VAD_CHUNK_THRESHOLD 4 s: "two" (~6 s) is cut into VAD regions, "mono" (~2 s) is not
    settings = weightfree_settings(tmp, models_file=tmp / "stream-models.json", vad_chunk_threshold=4.0)
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=120, max_retries=0)


def stream_events(sdk: openai.OpenAI, path: Path, **kwargs: Any) -> list[Any]:
    with path.open("rb") as f:
        stream = sdk.audio.transcriptions.create(file=f, stream=True, **kwargs)
        return list(stream)


@pytest.mark.parametrize("model", ["whisper-1", ISOLATED])
@pytest.mark.parametrize("clip", ["mono", "two"])
def test_stream_deltas_then_done_equal_the_plain_answer(
    sdk: openai.OpenAI, audio: dict[str, Path], model: str, clip: str
) -> None:
    with audio[clip].open("rb") as f:
        plain = sdk.audio.transcriptions.create(model=model, file=f).text
    events = stream_events(sdk, audio[clip], model=model)
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done"
    assert kinds.count("transcript.text.done") == 1
    deltas = [event.delta for event in events if event.type == "transcript.text.delta"]
    assert deltas, kinds
    done = events[-1]
    assert done.text == plain
    assert "".join(deltas) == done.text
    assert done.usage.type == "duration"
    assert done.usage.seconds >= 1
    if clip == "two":
        assert len(deltas) == 2  # one delta per VAD region, as each finishes


def test_wire_is_data_only_sse(base_url: str, audio: dict[str, Path]) -> None:
    with audio["mono"].open("rb") as f:
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            data={"model": SPHINX, "stream": "true"},
            files={"file": ("a.wav", f)},
            timeout=60,
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), response.text
    assert "[DONE]" not in response.text
    assert "event:" not in response.text


@pytest.mark.parametrize("form", ["brackets", "json"])
def test_chunking_strategy_changes_vad_regions(base_url: str, audio: dict[str, Path], form: str) -> None:
    """The 2 s "mono" clip is under the VAD threshold (one block); any chunking_strategy runs VAD. On
    "two" (1.2 s of silence between the sentences), silence_duration_ms decides how many regions."""

    def deltas(path: Path, vad: dict[str, Any] | None) -> int:
        data: dict[str, Any] = {"model": SPHINX, "stream": "true"}
        if vad is not None and form == "brackets":
            data.update({f"chunking_strategy[{k}]": str(v) for k, v in vad.items()})
        elif vad is not None:
            data["chunking_strategy"] = json.dumps(vad)
        with path.open("rb") as f:
            response = httpx.post(
                f"{base_url}/v1/audio/transcriptions", data=data, files={"file": ("a.wav", f)}, timeout=60
            )
        assert response.status_code == 200, response.text
        return response.text.count('"transcript.text.delta"')

    short = {"type": "server_vad", "silence_duration_ms": 300, "prefix_padding_ms": 100, "threshold": 0.5}
    long = {**short, "silence_duration_ms": 3000}
    assert deltas(audio["two"], short) == 2
    assert deltas(audio["two"], long) == 1
    assert deltas(audio["two"], {"type": "auto"}) == 2
    assert deltas(audio["mono"], short) == 1


def test_chunking_strategy_auto_through_the_sdk(sdk: openai.OpenAI, audio: dict[str, Path]) -> None:
    events = stream_events(sdk, audio["two"], model=SPHINX, chunking_strategy="auto")
    assert [e.type for e in events].count("transcript.text.delta") == 2


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": "srt"}, "stream"),
        ({"chunking_strategy": "everything"}, "chunking_strategy"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "7"}, "chunking_strategy"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[color]": "red"}, "chunking_strategy"),
        ({"include[]": "logprobs"}, "include"),
        ({"include[]": "tokens"}, "include"),
        ({"prompt": "a smart home"}, "prompt"),
        ({"temperature": "0.2"}, "temperature"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),
        ({"stream": "maybe"}, "stream"),
    ],
)
def test_everything_is_validated_before_the_first_byte(
    base_url: str, audio: dict[str, Path], fields: dict[str, str], param: str
) -> None:
    with audio["mono"].open("rb") as f:
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            data={"model": SPHINX, "stream": "true", **fields},
            files={"file": ("a.wav", f)},
            timeout=60,
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if param in ("prompt", "temperature", "include") and "tokens" not in str(fields):
        assert SPHINX in error["message"]  # names the option and the model


def test_unknown_model_is_404_not_a_stream(sdk: openai.OpenAI, audio: dict[str, Path]) -> None:
    with pytest.raises(openai.NotFoundError):
        stream_events(sdk, audio["mono"], model="nope")


# --- an engine failing after its first segment: API shape, with a fake engine ---------------------------


class HalfwayEngine:
    """Yields one segment, then fails; records the requests it got."""

    can_translate = False
    batches_regions = False
    requests: ClassVar[list[TranscriptionRequest]] = []

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        return drain(self.transcribe_stream(request))

    def transcribe_stream(
        self, request: TranscriptionRequest
    ) -> Generator[Segment, None, TranscriptionResult]:
        HalfwayEngine.requests.append(request)
        yield Segment(0.0, 0.5, " first")
        if self.spec.slug == "breaks":
            raise EngineError("the engine broke after its first segment")
        yield Segment(0.5, 1.0, " second")
        return TranscriptionResult(text=" first second", language="en", duration=1.0)


def test_error_after_the_first_byte_is_an_error_event(tmp_path: Path, audio: dict[str, Path]) -> None:
    registry = {"models": {"breaks": {"executor": "pocketsphinx"}, "works": {"executor": "pocketsphinx"}}}
    (tmp_path / "stream-models.json").write_text(json.dumps(registry))
    settings = weightfree_settings(tmp_path, models_file=tmp_path / "stream-models.json")
    with serve(create_app(settings, engine_factory=HalfwayEngine)) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        received: list[Any] = []
        with (
            pytest.raises(openai.APIError, match="broke after its first segment"),
            audio["mono"].open("rb") as f,
        ):
            received.extend(sdk.audio.transcriptions.create(model="breaks", file=f, stream=True))
        assert [e.type for e in received] == ["transcript.text.delta"]  # then the error event
        events = stream_events(sdk, audio["mono"], model="works")
        assert [e.type for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
        # timestamp_granularities reaches the engine: no word pass unless asked
        HalfwayEngine.requests.clear()
        with audio["mono"].open("rb") as f:
            sdk.audio.transcriptions.create(model="works", file=f, response_format="verbose_json")
        with audio["mono"].open("rb") as f:
            sdk.audio.transcriptions.create(
                model="works", file=f, response_format="verbose_json", timestamp_granularities=["segment"]
            )
        with audio["mono"].open("rb") as f:
            sdk.audio.transcriptions.create(
                model="works", file=f, response_format="verbose_json", timestamp_granularities=["word"]
            )
        assert [r.word_timestamps for r in HalfwayEngine.requests] == [False, False, True]
