"""The five Qwen3-TTS slugs through the HTTP API: real qwen-tts code on random-weight checkpoints of the
three shapes (tests/fixtures/qwen3.py), a real uvicorn server, the CPU runtime.

Random weights make noise, so behaviour is checked where it is observable: greedy decoding
(`do_sample=false`) is deterministic, so "instructions honoured" means the audio changes with them and
"dropped" means it does not; cloning mode (ICL vs x-vector) is read from the engine's log. Every request
bounds `max_new_tokens` (random weights never choose to stop). Engines run in the server process here so
their log records can be read; tests/api/test_qwen3_isolation.py covers the worker process.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import openai
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.fixtures.qwen3 import SLUG_SHAPES, install_qwen3
from tests.fixtures.speech import espeak, write_wav
from tests.server import serve

pytestmark = pytest.mark.slow

REPO = {
    "qwen3-tts-0.6b": "Qwen/Qwen3-TTS-12Hz-0.6B-Base",
    "qwen3-tts-1.7b": "Qwen/Qwen3-TTS-12Hz-1.7B-Base",
    "qwen3-tts-0.6b-custom": "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice",
    "qwen3-tts-1.7b-custom": "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice",
    "qwen3-tts-1.7b-design": "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign",
}
MODES = {"base": "alloy", "custom_voice": "Vivian", "voice_design": "design"}
MODELS: dict[str, dict[str, Any]] = {
    slug: {
        "executor": "qwen3_tts",
        "repo": repo,
        "qwen3_mode": SLUG_SHAPES[slug][0],
        "default_voice": MODES[SLUG_SHAPES[slug][0]],
        "isolation": "inprocess",
    }
    for slug, repo in REPO.items()
}
# registry says voice_design, the snapshot is a CustomVoice checkpoint: logged, the registry wins
MODELS["mismatch"] = {**MODELS["qwen3-tts-1.7b-design"], "repo": "test/mismatch"}
FAST = {"max_new_tokens": 5, "response_format": "pcm"}
GREEDY = {**FAST, "do_sample": False}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qwen3-http")
    data = root / "data"
    for slug in REPO:
        install_qwen3(data, slug)
    install_qwen3(data, "qwen3-tts-1.7b-custom")
    shutil.copytree(data / "models" / "qwen3-tts-1.7b-custom", data / "models" / "mismatch")
    (root / "models.json").write_text(json.dumps({"models": MODELS}))
    return root


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[tuple[str, _Records, Path]]:
    settings = load_settings(
        models_file=root / "models.json",
        data_dir=root / "data",
        sweeper_interval=0,
        device="cpu",
        cpu_threads=1,
        max_loaded_models=6,
        max_upload_bytes=2 * 1024 * 1024,
    )
    records = _Records()
    logger = logging.getLogger("talkies")
    with pytest.MonkeyPatch.context() as mp:
        logger.addHandler(records)
        mp.setattr(logger, "level", logging.INFO)
        try:
            with serve(create_app(settings)) as base_url:
                yield base_url, records, settings.custom_voices_dir
        finally:
            logger.removeHandler(records)


@pytest.fixture
def client(server: tuple[str, _Records, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=600) as client:
        yield client


@pytest.fixture
def records(server: tuple[str, _Records, Path]) -> _Records:
    server[1].records.clear()
    return server[1]


@pytest.fixture
def custom_dir(server: tuple[str, _Records, Path]) -> Iterator[Path]:
    server[2].mkdir(parents=True, exist_ok=True)
    yield server[2]
    shutil.rmtree(server[2], ignore_errors=True)


def speak(client: httpx.Client, model: str, **body: Any) -> httpx.Response:
    return client.post("/v1/audio/speech", json={"model": model, "input": "Hello there.", **body})


def pcm(client: httpx.Client, model: str, **body: Any) -> bytes:
    response = speak(client, model, **{**FAST, **body})
    assert response.status_code == 200, response.text
    assert response.content
    return response.content


def voices(client: httpx.Client, model: str) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/audio/voices", params={"model": model})
    assert response.status_code == 200, response.text
    return {v["voice"]: v for v in response.json()["voices"]}


def reference(path: Path, seconds: float = 4.0, text: str | None = None, voice: str = "en-us+klatt") -> Path:
    sentence = "The quick brown fox jumps over the lazy dog. A clear voice reads a short passage."
    audio = espeak(sentence, voice)
    reps = int(np.ceil(seconds * 16_000 / len(audio)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.tile(audio, reps)[: int(seconds * 16_000)])
    if text is not None:
        path.with_suffix(".txt").write_text(text)
    return path


# --- every slug -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", list(REPO))
def test_every_contract_slug_speaks_with_its_default_voice(client: httpx.Client, slug: str) -> None:
    design = {"instructions": "A calm voice."} if slug.endswith("design") else {}
    response = speak(client, slug, response_format="wav", max_new_tokens=4, **design)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.content[:4] == b"RIFF"
    assert len(response.content) > 44 + 2 * 1920  # at least one 80 ms codec frame of 24 kHz s16


def test_catalogs_per_mode(client: httpx.Client) -> None:
    base = voices(client, "qwen3-tts-0.6b")
    assert {"alloy", "echo", "fable"} <= set(base)
    assert base["alloy"]["default"]
    assert base["alloy"]["origin"] == "builtin"
    custom = voices(client, "qwen3-tts-1.7b-custom")
    assert list(custom) == [
        "Vivian",
        "Serena",
        "Uncle_Fu",
        "Dylan",
        "Eric",
        "Ryan",
        "Aiden",
        "Ono_Anna",
        "Sohee",
    ]
    assert custom["Vivian"]["default"]
    assert {v["origin"] for v in custom.values()} == {"builtin"}
    assert list(voices(client, "qwen3-tts-1.7b-design")) == ["design"]


def test_mode_mismatch_is_logged_and_the_registry_wins(client: httpx.Client, records: _Records) -> None:
    pcm(client, "mismatch", instructions="A calm voice.")
    assert any(
        "tts_model_type is custom_voice" in m and "serving it as voice_design" in m
        for m in records.messages()
    )


# --- custom_voice -----------------------------------------------------------------------------------------


def test_custom_voice_speakers_case_insensitive_and_unknown_listed(client: httpx.Client) -> None:
    assert pcm(client, "qwen3-tts-0.6b-custom", voice="ryan", **GREEDY) == pcm(
        client, "qwen3-tts-0.6b-custom", voice="Ryan", **GREEDY
    )
    response = speak(client, "qwen3-tts-0.6b-custom", voice="Bob", **FAST)
    assert response.status_code == 400
    assert "Sohee" in response.json()["detail"]
    assert response.json()["error"]["param"] == "voice"


def test_instructions_honoured_on_1_7b_custom_dropped_on_0_6b(
    client: httpx.Client, records: _Records
) -> None:
    styled = {"voice": "Aiden", "instructions": "Speak angrily.", **GREEDY}
    plain = {"voice": "Aiden", **GREEDY}
    assert pcm(client, "qwen3-tts-1.7b-custom", **styled) != pcm(client, "qwen3-tts-1.7b-custom", **plain)
    assert pcm(client, "qwen3-tts-0.6b-custom", **styled) == pcm(client, "qwen3-tts-0.6b-custom", **plain)
    assert any("instructions dropped" in m for m in records.messages())


def test_language_selects_the_spoken_language(client: httpx.Client) -> None:
    english = pcm(client, "qwen3-tts-1.7b-custom", language="English", **GREEDY)
    assert english == pcm(client, "qwen3-tts-1.7b-custom", language="en", **GREEDY)
    assert english != pcm(client, "qwen3-tts-1.7b-custom", language="German", **GREEDY)
    response = speak(client, "qwen3-tts-1.7b-custom", language="Klingon", **FAST)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "language"
    assert "English" in response.json()["detail"]


# --- voice_design -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("instructions", [None, "", "   "])
def test_voice_design_needs_instructions(client: httpx.Client, instructions: str | None) -> None:
    body = {} if instructions is None else {"instructions": instructions}
    response = speak(client, "qwen3-tts-1.7b-design", **body, **FAST)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "instructions"


def test_voice_design_follows_the_description_and_ignores_voice(client: httpx.Client) -> None:
    warm = pcm(client, "qwen3-tts-1.7b-design", instructions="A warm young voice.", **GREEDY)
    assert warm == pcm(
        client, "qwen3-tts-1.7b-design", voice="anything", instructions="A warm young voice.", **GREEDY
    )
    assert warm != pcm(client, "qwen3-tts-1.7b-design", instructions="An old gravelly voice.", **GREEDY)


# --- sampling fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("top_k", 0),
        ("top_k", 1001),
        ("top_p", 1.5),
        ("repetition_penalty", 0.4),
        ("repetition_penalty", 2.1),
        ("max_new_tokens", 0),
        ("max_new_tokens", 2049),
        ("do_sample", "maybe"),
    ],
)
def test_sampling_fields_out_of_range_answer_422(client: httpx.Client, field: str, value: Any) -> None:
    response = speak(client, "qwen3-tts-0.6b-custom", **{**FAST, field: value})
    assert response.status_code == 422
    assert field in json.dumps(response.json())


def test_sampling_fields_reach_the_model(client: httpx.Client) -> None:
    model = "qwen3-tts-0.6b-custom"
    first = pcm(client, model, **GREEDY)
    assert first == pcm(client, model, **GREEDY)  # greedy: deterministic
    longer = pcm(client, model, **{**GREEDY, "max_new_tokens": 9})
    assert len(longer) > len(first)  # max_new_tokens bounds the codec frames
    tuned = {"temperature": 0.3, "top_k": 5, "top_p": 0.9, "repetition_penalty": 1.3, "speed": 2.0}
    assert pcm(client, model, **tuned)  # sampled with every knob (and speed, ignored) accepted


# --- base: cloning ----------------------------------------------------------------------------------------


def test_icl_with_transcript_xvector_without(
    client: httpx.Client, records: _Records, custom_dir: Path
) -> None:
    reference(custom_dir / "with-text.wav", text="The quick brown fox jumps over the lazy dog.")
    reference(custom_dir / "no-text.wav")
    pcm(client, "qwen3-tts-0.6b", voice="with-text")
    pcm(client, "qwen3-tts-0.6b", voice="no-text")
    messages = records.messages()
    assert any("'with-text': in-context cloning" in m for m in messages)
    assert any("'no-text' has no transcript" in m and "x-vector-only" in m for m in messages)
    assert not any("'with-text' has no transcript" in m for m in messages)
    warning = next(r for r in records.records if "'no-text' has no transcript" in r.getMessage())
    assert warning.levelno == logging.WARNING


def test_nested_shadowed_and_rescanned_voices(client: httpx.Client, custom_dir: Path) -> None:
    assert voices(client, "qwen3-tts-1.7b")["alloy"]["origin"] == "builtin"
    response = speak(client, "qwen3-tts-1.7b", voice="clients/acme/jane", **FAST)
    assert response.status_code == 400
    assert "alloy" in response.json()["detail"]
    # files dropped in while the server runs count at once: nested name, and a custom "alloy"
    reference(custom_dir / "clients" / "acme" / "jane.wav", text="A short passage.")
    reference(custom_dir / "alloy.wav", text="A short passage.")
    listed = voices(client, "qwen3-tts-1.7b")
    assert listed["clients/acme/jane"]["origin"] == "custom"
    assert listed["alloy"]["origin"] == "custom"
    assert listed["alloy"]["default"]
    assert listed["echo"]["origin"] == "builtin"
    assert pcm(client, "qwen3-tts-1.7b", voice="clients/acme/jane")
    (custom_dir / "clients" / "acme" / "jane.wav").unlink()
    assert speak(client, "qwen3-tts-1.7b", voice="clients/acme/jane", **FAST).status_code == 400


def test_language_of_a_reference_comes_from_its_lang_file(
    client: httpx.Client, records: _Records, custom_dir: Path
) -> None:
    reference(custom_dir / "anna.wav", text="A short passage.")
    pcm(client, "qwen3-tts-0.6b", voice="anna")
    (custom_dir / "anna.lang").write_text("German\n")
    pcm(client, "qwen3-tts-0.6b", voice="anna", instructions="Whisper it.")
    done = [m for m in records.messages() if "codec frames in" in m]
    assert "(base mode, English, no instructions)" in done[0]
    assert "(base mode, German, with instructions)" in done[1]
    (custom_dir / "anna.lang").write_text("Klingon\n")
    response = speak(client, "qwen3-tts-0.6b", voice="anna", **FAST)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "language"


# --- POST / DELETE /v1/audio/voices -------------------------------------------------------------------


def upload(client: httpx.Client, name: str, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as handle:
        files = {"audio_sample": (path.name, handle, "audio/wav")}
        return client.post("/v1/audio/voices", data={"name": name, **fields}, files=files)


def test_uploaded_voice_is_used_then_deleted(
    client: httpx.Client, records: _Records, custom_dir: Path, tmp_path: Path
) -> None:
    sample = reference(tmp_path / "sample.wav", seconds=5)
    response = upload(client, "team/alice", sample, transcript="The quick brown fox.", language="English")
    assert response.status_code == 200, response.text
    voice = response.json()
    assert voice["object"] == "audio.voice"
    assert voice["id"] == voice["name"] == "team/alice"
    assert isinstance(voice["created_at"], int)
    assert (custom_dir / "team" / "alice.txt").read_text().strip() == "The quick brown fox."
    assert voices(client, "qwen3-tts-0.6b")["team/alice"]["origin"] == "custom"
    assert pcm(client, "qwen3-tts-0.6b", voice="team/alice")
    assert any("'team/alice': in-context cloning" in m for m in records.messages())

    deleted = client.delete("/v1/audio/voices/team/alice")
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True
    assert not (custom_dir / "team").exists()
    assert "team/alice" not in voices(client, "qwen3-tts-0.6b")
    assert speak(client, "qwen3-tts-0.6b", voice="team/alice", **FAST).status_code == 400
    assert client.delete("/v1/audio/voices/team/alice").status_code == 404
    assert client.delete("/v1/audio/voices/alloy").status_code == 404  # built-in voices stay


@pytest.mark.parametrize("name", ["../escape", "a//b", "a/./b", ".hidden", "a\\b", "x/..", "", "a\x00b"])
def test_hostile_voice_names_are_refused(
    client: httpx.Client, custom_dir: Path, tmp_path: Path, name: str
) -> None:
    response = upload(client, name, reference(tmp_path / "s.wav"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "name"
    assert not any(custom_dir.parent.glob("escape*"))
    if name in (".hidden", "a\\b", "a//b"):  # the others cannot travel in a URL path as they are
        assert client.delete(f"/v1/audio/voices/{quote(name, safe='/')}").status_code == 400


def test_reference_audio_is_checked(client: httpx.Client, tmp_path: Path) -> None:
    short = upload(client, "short", reference(tmp_path / "short.wav", seconds=2))
    assert short.status_code == 400
    assert "3-60 s" in short.json()["detail"]
    long = upload(client, "long", reference(tmp_path / "long.wav", seconds=61))
    assert long.status_code == 400
    assert "3-60 s" in long.json()["detail"]
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF" + b"\x00" * 5000)
    response = upload(client, "junk", junk)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "audio_sample"
    missing = client.post("/v1/audio/voices", data={"name": "x"}, files={"other": ("a", b"b")})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "audio_sample"


def test_upload_over_the_size_cap_answers_413(client: httpx.Client, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))
    assert upload(client, "big", big).status_code == 413


# --- streaming and the official client ---------------------------------------------------------------


def test_first_audio_leaves_before_generation_ends(
    client: httpx.Client, records: _Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine is held after its first chunk until the client has received audio: a server that
    buffered the stream would leave the client with nothing and the engine waiting (gate not opened).
    (Without the gate this test raced: a client that read late got every byte in its first read.)"""
    from talkies.engines.qwen3.engine import Qwen3Engine

    received = threading.Event()
    opened: list[bool] = []
    real_synthesize = Qwen3Engine.synthesize

    def gated(self: Qwen3Engine, request: Any) -> Iterator[Any]:
        chunks = real_synthesize(self, request)
        try:
            yield next(chunks)
            opened.append(received.wait(60))  # generation pauses until the client holds audio
            yield from chunks
        finally:
            chunks.close()

    monkeypatch.setattr(Qwen3Engine, "synthesize", gated)
    body = {"model": "qwen3-tts-0.6b-custom", "input": "Hello there.", "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json={**body, "max_new_tokens": 40}) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()
        first = next(chunks)
        finished_at_first = [m for m in records.messages() if "codec frames in" in m]
        received.set()
        rest = b"".join(chunks)
    assert first
    assert opened == [True]  # the client had audio while the engine was paused after its first chunk
    assert finished_at_first == []
    assert rest  # the frames generated after the pause arrived too
    # The engine logs its frame count once its generator has finished. Sampling on random weights can
    # meet the end-of-speech token early, so the count is bounded by max_new_tokens, not fixed at 39.
    done = re.compile(r"model qwen3-tts-0\.6b-custom: (\d+) codec frames in ")
    counts = [int(m.group(1)) for m in map(done.match, records.messages()) if m]
    assert len(counts) == 1, records.messages()
    assert 1 <= counts[0] <= 39


def test_official_openai_client_with_extra_body(server: tuple[str, _Records, Path]) -> None:
    client = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="not-needed", max_retries=0)
    design = client.audio.speech.create(
        model="qwen3-tts-1.7b-design",
        input="Welcome to the broadcast.",
        voice="design",
        instructions="A warm, friendly young female voice with a cheerful tone.",
        response_format="wav",
        extra_body={"language": "English", "max_new_tokens": 4, "do_sample": False},
    )
    assert design.content[:4] == b"RIFF"
    clone = client.audio.speech.create(
        model="qwen3-tts-0.6b",
        input="Hi.",
        voice="alloy",
        response_format="mp3",
        extra_body={"max_new_tokens": 4},
    )
    assert clone.content[:3] == b"ID3" or clone.content[:2] == b"\xff\xfb"
    with pytest.raises(openai.UnprocessableEntityError):
        client.audio.speech.create(
            model="qwen3-tts-1.7b-custom", input="Hi.", voice="Aiden", extra_body={"top_p": 3}
        )
