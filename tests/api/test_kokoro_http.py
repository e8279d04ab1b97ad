"""Both Kokoro executors through the HTTP app (real uvicorn, real engines on the random-weight Kokoro-82M).

One server per module; tests are grouped by executor (a module-scoped parameter) so each model loads
once. Random weights give noise of deterministic length (75 ms per phoneme at speed 1), so durations are
checked exactly where the arithmetic allows. The network is cut off (loopback aside) and spaCy's
download refused for the whole module.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from talkies.api.app import create_app
from talkies.engines.kokoro.voices import CATALOG
from talkies.settings import load_settings
from tests.fixtures.cache import install_snapshot
from tests.fixtures.kokoro import install_kokoro, install_kokoro_onnx
from tests.fixtures.whisper import build_whisper
from tests.server import serve

pytestmark = pytest.mark.slow

MODELS: dict[str, dict[str, Any]] = {
    "kokoro-82m": {"executor": "kokoro", "repo": "hexgrad/Kokoro-82M", "default_voice": "af_heart"},
    "kokoro-82m-nvidia": {
        "executor": "kokoro_nvidia",
        "repo": "nvidia/kokoro-82M-onnx-opt",
        "default_voice": "af_heart",
    },
    "whisper-micro": {"executor": "whisper", "repo": "test/whisper-micro"},
}
SAMPLE_BYTES = 2  # pcm is s16le at 24 kHz
SEAM = round(0.010 * 24_000)  # crossfade overlap between sentence chunks, in samples


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kokoro-http")
    data = root / "data"
    install_kokoro(data)
    install_kokoro_onnx(data)
    install_snapshot(build_whisper("micro"), data, "whisper-micro")
    (root / "models.json").write_text(json.dumps({"models": MODELS}))
    return root


def make_settings(root: Path, isolation: str = "inprocess") -> Any:
    return load_settings(
        models_file=root / "models.json",
        data_dir=root / "data",
        sweeper_interval=0,
        engine_isolation=isolation,
        device="cpu",
        cpu_threads=1,  # two threads on a busy two-core box are slower than one
        max_loaded_models=1,  # Kokoro and Whisper evict each other (test_kokoro_and_whisper_evict_each_other)
    )


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[tuple[str, _Records]]:
    import spacy.cli

    settings = make_settings(root)
    records = _Records()
    connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"network access attempted: {address!r}")
        return connect(sock, address)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"spaCy download attempted: {args!r}")

    logger = logging.getLogger("talkies.engines")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", loopback_only)
        mp.setattr(spacy.cli, "download", no_download)
        logger.addHandler(records)
        mp.setattr(logger, "level", logging.INFO)
        try:
            with serve(create_app(settings)) as base_url:
                yield base_url, records
        finally:
            logger.removeHandler(records)


@pytest.fixture(scope="module", params=["kokoro-82m", "kokoro-82m-nvidia"])
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(server: tuple[str, _Records]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=300) as client:
        yield client


def speak(client: httpx.Client, model: str, text: str = "Hi.", **body: object) -> httpx.Response:
    return client.post("/v1/audio/speech", json={"model": model, "input": text, **body})


def samples(client: httpx.Client, model: str, text: str = "Hi.", **body: object) -> int:
    response = speak(client, model, text, response_format="pcm", **body)
    assert response.status_code == 200, response.text
    return len(response.content) // SAMPLE_BYTES


def test_every_format_by_magic_bytes(client: httpx.Client, model: str) -> None:
    bodies = {}
    for fmt, ctype in [
        ("wav", "audio/wav"),
        ("pcm", "application/octet-stream"),
        ("flac", "audio/flac"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
        ("mp3", "audio/mpeg"),
    ]:
        response = speak(client, model, voice="af_heart", response_format=fmt)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == ctype
        bodies[fmt] = response.content
    wav = bodies["wav"]
    assert wav[:4] == b"RIFF"
    assert wav[8:12] == b"WAVE"
    assert struct.unpack_from("<I", wav, 24)[0] == 24_000
    assert len(wav) - 44 == len(bodies["pcm"])  # same length, the noise itself differs run to run
    assert bodies["flac"][:4] == b"fLaC"
    assert bodies["opus"][:4] == b"OggS"
    assert b"OpusHead" in bodies["opus"][:64]
    assert bodies["aac"][0] == 0xFF
    assert bodies["aac"][1] & 0xF6 == 0xF0  # ADTS sync word
    mp3 = bodies["mp3"]
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)


def test_duration_follows_text_speed_and_default_voice(client: httpx.Client, model: str) -> None:
    short = samples(client, model, "Hi.")
    assert 0.2 < short / 24_000 < 2.0
    long = samples(client, model, "Hi there, how are you today?")
    fast = samples(client, model, "Hi there, how are you today?", speed=2.0)
    assert long > 2 * short
    assert 0.55 < fast / long < 0.8
    assert samples(client, model, "Hi.") == short  # no voice: the default, af_heart
    assert samples(client, model, "Hi.", voice="af_heart") == short


def test_sentences_become_one_continuous_clip(client: httpx.Client, model: str) -> None:
    one, two = samples(client, model, "One."), samples(client, model, "Two.")
    assert samples(client, model, "One. Two.") == one + two - SEAM


def test_voice_catalog_filtered_by_model(client: httpx.Client, model: str) -> None:
    voices = client.get("/v1/audio/voices", params={"model": model}).json()["voices"]
    # jf_/zf_ voices in the snapshot: left out by the PyTorch executor (no ja/zh G2P), listed by the ONNX one
    extra = ["jf_alpha", "zf_xiaobei"] if model == "kokoro-82m-nvidia" else []
    assert [v["voice"] for v in voices] == [*CATALOG, *extra]
    assert {v["model"] for v in voices} == {model}
    assert [v["voice"] for v in voices if v["default"]] == ["af_heart"]
    assert all("origin" not in v for v in voices)
    everything = client.get("/v1/audio/voices").json()["voices"]
    assert {v["model"] for v in everything} == {"kokoro-82m", "kokoro-82m-nvidia"}
    assert len(everything) == 2 * len(CATALOG) + 2


def test_unknown_voice_and_blends(client: httpx.Client, model: str) -> None:
    for voice in ("alloy", "jf_nobody", "af_bella+nobody"):
        refused = speak(client, model, voice=voice)
        assert refused.status_code == 400, voice
        assert "af_heart" in refused.json()["detail"]
        assert "pm_santa" in refused.json()["detail"]
    assert samples(client, model, voice="af_bella+af_sky") > 0
    assert samples(client, model, voice="af_bella(2)+af_sky(1)") > 0
    assert samples(client, model, voice="ef_dora(1)+af_sky(3)") > 0
    bad = speak(client, model, voice="af_bella(two)+af_sky(1)")
    assert bad.status_code == 400
    assert "'two'" in bad.json()["detail"]
    blends = [v["voice"] for v in client.get("/v1/audio/voices", params={"model": model}).json()["voices"]]
    assert not any("+" in v for v in blends)  # blends are not catalog entries


def test_openai_client(server: tuple[str, _Records], model: str, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=300)
    speech = client.audio.speech.create(model=model, voice="af_heart", input="Hi.", response_format="wav")
    path = tmp_path / "hi.wav"
    speech.write_to_file(path)
    assert path.read_bytes()[:4] == b"RIFF"
    blended = client.audio.speech.create(model=model, voice="af_bella+af_sky", input="Hi.", speed=1.5)
    assert len(blended.content) > 500  # mp3 by default
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model=model, voice="shimmer", input="Hi.")


def test_offline_g2p_fallback_warned_once(server: tuple[str, _Records], model: str) -> None:
    import spacy

    assert not spacy.util.is_package("en_core_web_sm")
    warnings = [r.getMessage() for r in server[1].records if r.levelno == logging.WARNING]
    spacy_warnings = [w for w in warnings if "en_core_web_sm" in w]
    # kokoro-82m loads once per residence; evictions in this module may load it more than once
    loads = [r for r in server[1].records if "kokoro kokoro-82m loaded" in r.getMessage()]
    assert len(spacy_warnings) == len(loads)
    if model == "kokoro-82m":
        assert loads


def test_kokoro_and_whisper_evict_each_other(client: httpx.Client, model: str) -> None:
    def resident() -> set[str]:
        return {m["model"] for m in client.get("/api/ps").json()["models"] if m["loaded"]}

    wav = speak(client, model, "Hello there.", response_format="wav")
    assert wav.status_code == 200
    assert resident() == {model}
    heard = client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-micro", "language": "en"},
        files={"file": ("speech.wav", wav.content, "audio/wav")},
    )
    assert heard.status_code == 200, heard.text
    assert resident() == {"whisper-micro"}
    assert samples(client, model) > 0
    assert resident() == {model}


def test_worker_process_isolation(root: Path) -> None:
    """The default isolation: the engine runs in a worker process; chunks and blends come through it."""
    with (
        serve(create_app(make_settings(root, "process"))) as base_url,
        httpx.Client(base_url=base_url, timeout=300) as client,
    ):
        response = speak(
            client, "kokoro-82m-nvidia", "One. Two.", voice="af_bella+af_sky", response_format="pcm"
        )
        assert response.status_code == 200, response.text
        assert len(response.content) > 24_000  # two short sentences: over half a second
        pids = [m.get("pid") for m in client.get("/api/ps").json()["models"]]
        assert pids
        assert all(pids)
        assert speak(client, "kokoro-82m-nvidia", voice="nobody").status_code == 400
