"""NeMo engines end to end over HTTP: real NeMo restoring generated `.nemo` models, behind a real socket.

The models (tests/fixtures/nemo.py) are tiny and random: they decode nonsense, bounded by their own
saved configs. The tests check shapes, timing invariants, errors, shared weights and memory, not words.

Cost: every worker process imports NeMo (30-90 s of a loaded CI machine), so the bulk of this module runs
the engines in the server process (one import), and `test_worker_processes_*` starts two workers to show
the default isolation: Canary slugs sharing a worker, Parakeet's results crossing the pipe, and eviction
ending the worker. The module runs once, in the default pass: the `--engine-isolation` passes of
`make test` would repeat it at that cost without covering more.
"""

from __future__ import annotations

import gc
import io
import json
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import psutil
import pytest
from fastapi import FastAPI

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.fixtures.cache import install_snapshot
from tests.fixtures.nemo import SALM_LLM_REPO, build_salm, install_nemo
from tests.fixtures.speech import long_speech, speech_clip, write_wav
from tests.server import serve

pytestmark = pytest.mark.slow

PARAKEET = "parakeet-tdt-0.6b-v3"
PARAKEET_CTC = "parakeet-ctc-test"
CANARY = "canary-1b-flash"
DE2EN = "canary-1b-flash-de2en"
CANARY_EN = "canary-180m-flash"
SALM = "canary-qwen-2.5b"
TTS = "espeak-ng"
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")

REGISTRY: dict[str, dict[str, Any]] = {
    PARAKEET: {"executor": "parakeet", "repo": "nvidia/parakeet-tdt-0.6b-v3", "languages": ["en"]},
    PARAKEET_CTC: {"executor": "parakeet", "repo": "test/parakeet-ctc", "languages": ["en"]},
    CANARY: {
        "executor": "canary_multitask",
        "repo": "nvidia/canary-1b-flash",
        "default_source_lang": "en",
        "default_target_lang": "en",
        "languages": ["en", "de", "fr", "es"],
    },
    DE2EN: {
        "executor": "canary_multitask",
        "repo": "nvidia/canary-1b-flash",
        "default_source_lang": "de",
        "default_target_lang": "en",
        "default_task": "s2t_translation",
        "languages": ["de"],
    },
    CANARY_EN: {
        "executor": "canary_multitask",
        "repo": "nvidia/canary-180m-flash",
        "default_source_lang": "en",
        "languages": ["en"],
    },
    SALM: {
        "executor": "canary_salm",
        "repo": "nvidia/canary-qwen-2.5b",
        "default_source_lang": "en",
        "languages": ["en"],
        "dependencies": [SALM_LLM_REPO],
    },
    TTS: {"executor": "espeak"},
}


@pytest.fixture(scope="module", autouse=True)
def _once(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--engine-isolation") is not None:
        pytest.skip("runs once, in the default pass (see the module docstring)")


def make_app(tmp: Path, isolation: str | None = "inprocess") -> FastAPI:
    data_dir = tmp / "data"
    install_nemo("tdt", data_dir, PARAKEET)
    install_nemo("ctc", data_dir, PARAKEET_CTC)
    install_nemo("canary", data_dir, CANARY)
    install_nemo("canary", data_dir, DE2EN, name=CANARY)  # a second slug's copy of the same repository
    install_nemo("canary-en", data_dir, CANARY_EN)
    install_snapshot(build_salm() / "model", data_dir, SALM)
    (tmp / "models.json").write_text(json.dumps({"models": REGISTRY}))
    settings = load_settings(
        models_file=tmp / "models.json",
        data_dir=data_dir,
        device="cpu",
        cpu_threads=1,
        sweeper_interval=0,
        max_loaded_models=1,
        nemo_batch_size=4,
        vad_chunk_threshold=20.0,
        vad_max_speech=10.0,
        **({"engine_isolation": isolation} if isolation else {}),
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    import huggingface_hub.constants

    # Canary-Qwen's LLM dependency, where `talkies download` would have put it (the HF cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(build_salm() / "hub"))
        yield make_app(tmp_path_factory.mktemp("nemo-http"))


@pytest.fixture(scope="module")
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=600) as client:
        yield client


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("audio")
    clip = speech_clip(4.0)
    silent = np.zeros_like(clip)
    stereo = np.stack([np.concatenate([clip, silent]), np.concatenate([silent, clip])], axis=1)
    return {
        "short": write_wav(tmp / "short.wav", clip),
        "stereo": write_wav(tmp / "stereo.wav", stereo.reshape(-1), channels=2),
        "long": write_wav(tmp / "long.wav", long_speech(75.0).audio),
    }


def post(client: httpx.Client, endpoint: str, path: Path, model: str, **fields: Any) -> httpx.Response:
    with path.open("rb") as f:
        return client.post(
            f"/v1/audio/{endpoint}",
            data={"model": model, **fields},
            files={"file": (path.name, f, "audio/wav")},
        )


def loaded(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in client.get("/api/ps").json()["models"]}


def check_format(response: httpx.Response, fmt: str) -> None:
    assert response.status_code == 200, response.text
    if fmt == "json":
        assert list(response.json()) == ["text"]
    elif fmt == "verbose_json":
        body = response.json()
        assert body["segments"], body
        assert body["duration"] == pytest.approx(4.0, abs=0.01)
    elif fmt == "text":
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.strip()
    elif fmt == "srt":
        first = response.text.split("\n\n")[0].splitlines()
        assert first[0] == "1"
        assert " --> " in first[1]
    else:
        assert response.text.startswith("WEBVTT")
        assert " --> " in response.text


def check_words(body: dict[str, Any]) -> None:
    """Words monotonic, inside the file and inside their segments; segments in order."""
    assert body["words"], "word timestamps"
    previous = 0.0
    for word in body["words"]:
        assert previous - 1e-3 <= word["start"] <= word["end"] <= body["duration"] + 1e-3, word
        previous = word["end"]
    previous = 0.0
    for seg in body["segments"]:
        assert seg["start"] >= previous - 1e-3
        previous = seg["end"]
    for word in body["words"]:
        assert any(
            s["start"] - 1e-3 <= word["start"] <= word["end"] <= s["end"] + 1e-3 for s in body["segments"]
        )


# --- Parakeet (tests grouped by model: max_loaded_models=1 reloads on every switch) -----------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_parakeet_every_response_format(client: httpx.Client, audio: dict[str, Path], fmt: str) -> None:
    check_format(post(client, "transcriptions", audio["short"], PARAKEET, response_format=fmt), fmt)


def test_parakeet_verbose_json_has_word_timestamps(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(client, "transcriptions", audio["short"], PARAKEET, response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == "en"
    check_words(body)


def test_long_file_words_are_absolute_and_monotonic_across_vad_regions(
    client: httpx.Client, audio: dict[str, Path]
) -> None:
    response = post(client, "transcriptions", audio["long"], PARAKEET, response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(75.0, abs=0.05)
    check_words(body)
    assert len(body["segments"]) >= 4, "several VAD regions"
    assert body["words"][-1]["end"] > 50.0, "timestamps count from the start of the file"
    assert body["segments"][0]["start"] < 10.0


def test_parakeet_language_validation(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(client, "transcriptions", audio["short"], PARAKEET, language="de")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "language"
    assert response.json()["detail"].endswith("valid codes: en")
    assert post(client, "translations", audio["short"], PARAKEET).status_code == 400


def test_parakeet_stereo_diarization(client: httpx.Client, audio: dict[str, Path]) -> None:
    check_stereo(client, audio, PARAKEET)


def test_unload_returns_the_memory(app: FastAPI, client: httpx.Client, audio: dict[str, Path]) -> None:
    assert post(client, "transcriptions", audio["short"], PARAKEET).status_code == 200
    engine = app.state.pool.peek_engine(PARAKEET)
    model = weakref.ref(engine.model.model)
    del engine
    speech = client.post("/v1/audio/speech", json={"model": TTS, "input": "Hello.", "response_format": "wav"})
    assert speech.status_code == 200
    assert set(loaded(client)) == {TTS}, "evicted for the TTS model"
    gc.collect()
    assert model() is None, "NeMo's model was freed on eviction"


def test_parakeet_ctc_checkpoint(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(client, "transcriptions", audio["short"], PARAKEET_CTC, response_format="verbose_json")
    assert response.status_code == 200, response.text
    check_words(response.json())


# --- Canary ----------------------------------------------------------------------------------------------


def test_canary_180m_refuses_translation_naming_what_can(
    app: FastAPI, client: httpx.Client, audio: dict[str, Path]
) -> None:
    response = post(client, "translations", audio["short"], CANARY_EN)
    assert response.status_code == 400, response.text
    assert not app.state.pool.is_loaded(CANARY_EN), "refused from the registry, without loading"
    detail = response.json()["detail"]
    assert f"models that can: {CANARY}, {DE2EN}" in detail
    assert PARAKEET not in detail.split("models that can:")[1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_canary_every_response_format(client: httpx.Client, audio: dict[str, Path], fmt: str) -> None:
    check_format(post(client, "transcriptions", audio["short"], CANARY, response_format=fmt), fmt)


def test_canary_long_file_has_one_segment_per_region(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(client, "transcriptions", audio["long"], CANARY, response_format="verbose_json")
    assert response.status_code == 200, response.text
    segments = response.json()["segments"]
    assert len(segments) >= 4
    assert all(s["end"] - s["start"] <= 10.0 + 1e-3 for s in segments), "TALKIES_VAD_MAX_SPEECH"
    assert segments[-1]["end"] > 50.0
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)


@pytest.mark.parametrize(
    ("model", "language", "valid"), [(CANARY, "xx", "en, de, fr, es"), (DE2EN, "fr", "de")]
)
def test_canary_language_validation_lists_the_models_languages(
    client: httpx.Client, audio: dict[str, Path], model: str, language: str, valid: str
) -> None:
    for endpoint in ("transcriptions", "translations"):
        response = post(client, endpoint, audio["short"], model, language=language)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "language"
        assert response.json()["detail"].endswith(f"valid codes: {valid}")


def test_translation_slug_and_translations_endpoint(client: httpx.Client, audio: dict[str, Path]) -> None:
    slug = post(client, "transcriptions", audio["short"], DE2EN, response_format="verbose_json")
    assert slug.status_code == 200, slug.text
    assert slug.json()["language"] == "de"
    assert slug.json()["segments"]
    endpoint = post(
        client, "translations", audio["short"], CANARY, language="fr", response_format="verbose_json"
    )
    assert endpoint.status_code == 200, endpoint.text
    assert endpoint.json()["task"] == "translate"
    assert endpoint.json()["language"] == "fr"
    on_slug = post(client, "translations", audio["short"], DE2EN, response_format="srt")
    assert on_slug.status_code == 200, on_slug.text
    assert " --> " in on_slug.text


def test_two_slugs_on_one_repository_share_one_copy(
    app: FastAPI, client: httpx.Client, audio: dict[str, Path]
) -> None:
    assert post(client, "transcriptions", audio["short"], CANARY).status_code == 200
    assert post(client, "transcriptions", audio["short"], DE2EN).status_code == 200
    assert {CANARY, DE2EN} <= set(loaded(client)), "weight mates do not evict each other (max 1 model)"
    pool = app.state.pool
    shared = pool.peek_engine(CANARY).model
    assert pool.peek_engine(DE2EN).model is shared, "one loaded copy of the weights"
    model = weakref.ref(shared.model)
    del shared
    assert client.delete(f"/api/ps/{CANARY}").status_code == 200
    gc.collect()
    assert model() is not None, "the other slug still holds the weights"
    assert post(client, "transcriptions", audio["short"], DE2EN).status_code == 200
    assert client.delete(f"/api/ps/{DE2EN}").status_code == 200
    gc.collect()
    assert model() is None, "freed with the last slug"


def test_canary_stereo_diarization(client: httpx.Client, audio: dict[str, Path]) -> None:
    check_stereo(client, audio, CANARY)


def test_official_openai_client(base_url: str, audio: dict[str, Path]) -> None:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=600)
    data = audio["short"].read_bytes()
    translated = sdk.audio.translations.create(
        model=CANARY, file=("short.wav", io.BytesIO(data)), extra_body={"language": "de"}
    )
    assert translated.text.strip()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.translations.create(model=CANARY_EN, file=("short.wav", io.BytesIO(data)))
    assert "models that can" in str(caught.value)
    verbose = sdk.audio.transcriptions.create(
        model=PARAKEET,
        file=("short.wav", io.BytesIO(data)),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(4.0, abs=0.01)
    assert verbose.words
    assert verbose.segments


def check_stereo(client: httpx.Client, audio: dict[str, Path], model: str) -> None:
    response = post(
        client, "transcriptions", audio["stereo"], model, response_format="verbose_json", diarization="true"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {s["channel"] for s in body["segments"]} == {"L", "R"}
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts), "both channels merged on one timeline"
    assert all(0.0 <= s["start"] <= s["end"] <= body["duration"] + 1e-3 for s in body["segments"])
    assert all(w["channel"] in ("L", "R") for w in body["words"])
    assert body["text"].splitlines()[0].startswith("L: ")


# --- Canary-Qwen (SALM) -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_salm_formats_are_unaligned(client: httpx.Client, audio: dict[str, Path], fmt: str) -> None:
    response = post(client, "transcriptions", audio["short"], SALM, response_format=fmt)
    assert response.status_code == 200, response.text
    if fmt == "verbose_json":
        body = response.json()
        assert body["segments"] == []
        assert body["words"] == []
        assert body["text"].strip()
        assert body["language"] == "en"
    elif fmt in ("srt", "vtt"):
        cues = [line for line in response.text.splitlines() if " --> " in line]
        assert len(cues) == 1, "one cue for the whole file"
        assert cues[0].startswith("00:00:00")
        assert cues[0].endswith("00:00:04,000" if fmt == "srt" else "00:00:04.000")
    else:
        check_format(response, fmt)


def test_salm_long_file_texts_joined(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(client, "transcriptions", audio["long"], SALM, response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["segments"] == []
    assert len(body["text"].split(" ")) >= 4, "one text per VAD region, joined with a space"


def test_salm_refuses_translation_and_other_languages(client: httpx.Client, audio: dict[str, Path]) -> None:
    assert post(client, "translations", audio["short"], SALM).status_code == 400
    response = post(client, "transcriptions", audio["short"], SALM, language="de")
    assert response.status_code == 400
    assert response.json()["detail"].endswith("valid codes: en")


def test_salm_without_its_dependency_is_a_503_saying_what_to_run(
    tmp_path: Path, audio: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with serve(make_app(tmp_path)) as url, httpx.Client(base_url=url, timeout=600) as http:
        response = post(http, "transcriptions", audio["short"], SALM)
    assert response.status_code == 503, response.text
    assert f"talkies download {SALM}" in response.json()["detail"]
    assert SALM_LLM_REPO in response.json()["detail"]


# --- the default isolation: worker processes ---------------------------------------------------------------


def test_worker_processes_share_weights_and_end_on_eviction(tmp_path: Path, audio: dict[str, Path]) -> None:
    with serve(make_app(tmp_path, isolation=None)) as url, httpx.Client(base_url=url, timeout=600) as http:
        assert post(http, "transcriptions", audio["short"], CANARY).status_code == 200
        assert (
            post(http, "transcriptions", audio["short"], DE2EN, response_format="verbose_json").json()[
                "language"
            ]
            == "de"
        )
        rows = loaded(http)
        assert rows[CANARY]["pid"] == rows[DE2EN]["pid"], "one worker process holds both slugs"
        worker = rows[CANARY]["pid"]
        assert http.delete(f"/api/ps/{CANARY}").status_code == 200
        assert psutil.pid_exists(worker), "the worker stays for the other slug"
        assert post(http, "transcriptions", audio["short"], DE2EN).status_code == 200
        # Parakeet evicts the Canary worker (max_loaded_models=1) and answers from its own.
        response = post(http, "transcriptions", audio["short"], PARAKEET, response_format="verbose_json")
        assert response.status_code == 200, response.text
        check_words(response.json())
        assert set(loaded(http)) == {PARAKEET}
        assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
