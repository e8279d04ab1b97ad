"""What the ingress does beyond routes on Ray Serve, on one deployment: the MCP `transcribe` / `speak` tools,
`diarized_json` on a mono file (the tiny sherpa-onnx diarizer, run on a model-server replica like ASR and
TTS), the Wyoming server (inside the ingress replica, pinned to the head node), a `process` model (an
external server the ingress replica starts and proxies to), and GET /metrics with every model-server
replica's pool metrics labelled by deployment and replica."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import numpy as np
import openai
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from openai.types.audio import TranscriptionDiarized
from prometheus_client.parser import text_string_to_metric_families

from talkies.settings import Settings
from tests.api.audio_helpers import SENTENCE_A, speak, weightfree_settings, word_overlap
from tests.api.test_diarization_http import assert_turns, wav_data_url
from tests.fixtures.diarization import FEMALE, LINES, MALE, Conversation, build_tiny_snapshot, conversation
from tests.fixtures.speech import espeak, write_wav
from tests.live_server import free_port
from tests.process.conftest import script_model
from tests.ray.conftest import RayServe, deploy, replica_states

wyoming = pytest.importorskip("wyoming")

from wyoming.asr import Transcribe, Transcript  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.tts import Synthesize, SynthesizeVoice  # noqa: E402

from tests.wyoming_helpers import read_until, wyoming_client  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.anyio]

ASR = "pocketsphinx-en-us"
TTS = "espeak-ng"
DIARIZER = "tiny-diarizer"
EXTERNAL = "script-tts"
MODEL_SERVER = "talkies-models-cpu"
TIMEOUT = 300.0


@pytest.fixture(scope="module")
def wyoming_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, wyoming_port: int) -> Settings:
    tmp = tmp_path_factory.mktemp("ray-ingress")
    models = {
        ASR: {"executor": "pocketsphinx"},
        TTS: {"executor": "espeak"},
        DIARIZER: {"executor": "sherpa_diarization", "repo": "local/tiny-diarizer"},
        EXTERNAL: script_model("tts"),
    }
    (tmp / "ingress-models.json").write_text(json.dumps({"models": models}))
    build_tiny_snapshot(tmp / "data" / "models" / DIARIZER)
    return weightfree_settings(
        tmp,
        models_file=tmp / "ingress-models.json",
        wyoming_uri=f"tcp://127.0.0.1:{wyoming_port}",
        ray_replica_cpus=0.25,
    )


@pytest.fixture(scope="module")
def url(ray_serve: RayServe, settings: Settings) -> Iterator[str]:
    with deploy(ray_serve, settings) as base:
        yield base


@pytest.fixture(scope="module")
def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Conversation, Path]:
    talk = conversation((MALE, FEMALE))
    return talk, write_wav(tmp_path_factory.mktemp("ray-ingress-audio") / "two.wav", talk.audio)


def held_on_model_servers(model: str) -> set[str]:
    """The model-server replicas holding `model`, as they report it."""
    return {
        s["replica"] for s in replica_states(MODEL_SERVER) if any(m["model"] == model for m in s["models"])
    }


# --- MCP ----------------------------------------------------------------------------------------------------


@asynccontextmanager
async def mcp_session(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(60, read=TIMEOUT)) as http,
        streamable_http_client(f"{url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def payload(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def test_mcp_transcribe_and_speak_run_on_the_model_servers(url: str, tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "a.wav", speak(SENTENCE_A))
    async with mcp_session(url) as session:
        content = base64.b64encode(clip.read_bytes()).decode()
        assert payload(await session.call_tool("put_file", {"path": "in/a.wav", "content_base64": content}))
        heard = payload(await session.call_tool("transcribe", {"file_path": "in/a.wav", "model": ASR}))
        assert word_overlap(SENTENCE_A, heard["text"]) >= 0.5, heard
        spoken = payload(
            await session.call_tool("speak", {"text": SENTENCE_A, "model": TTS, "path": "out/a.wav"})
        )
        assert spoken["path"] == "out/a.wav"
        assert spoken["format"] == "wav"
        assert spoken["duration"] > 1.0
        staged = payload(await session.call_tool("get_file", {"path": "out/a.wav"}))
        assert base64.b64decode(staged["content_base64"])[:4] == b"RIFF"
        models = payload(await session.call_tool("list_models", {}))["models"]
        assert {m["slug"]: m["loaded"] for m in models if m["slug"] in (ASR, TTS)} == {ASR: True, TTS: True}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:  # the HTTP model lists say the same
        cards = (await http.get("/v1/models")).json()["data"]
        assert {c["id"]: c["loaded"] for c in cards if c["id"] in (ASR, TTS)} == {ASR: True, TTS: True}
        assert (await http.get(f"/v1/models/{ASR}")).json()["loaded"] is True
        speech_models = (await http.get("/v1/audio/models")).json()["models"]
        assert {c["id"]: c["loaded"] for c in speech_models if c["id"] == TTS} == {TTS: True}
    # The engines ran on a model-server replica, not in the ingress.
    for model in (ASR, TTS):
        assert await asyncio.to_thread(held_on_model_servers, model)


# --- diarized_json ------------------------------------------------------------------------------------------


def test_diarized_json_on_a_mono_file_runs_the_diarizer_on_a_model_server(
    sdk: openai.OpenAI, two: tuple[Conversation, Path]
) -> None:
    talk, path = two
    with path.open("rb") as f:
        body = sdk.audio.transcriptions.create(
            model=ASR, file=f, response_format="diarized_json", extra_body={"num_speakers": 2}
        )
    assert isinstance(body, TranscriptionDiarized)
    assert_turns(body.segments, talk, ["A", "B", "A", "B"])
    assert body.duration == pytest.approx(talk.duration, abs=0.05)
    (holder,) = held_on_model_servers(DIARIZER)
    assert holder


def test_known_speakers_reach_the_diarizer_through_the_object_store(
    sdk: openai.OpenAI, two: tuple[Conversation, Path]
) -> None:
    talk, path = two
    references = [wav_data_url(espeak(LINES[2], MALE)), wav_data_url(espeak(LINES[3], FEMALE))]
    with path.open("rb") as f:
        body = sdk.audio.transcriptions.create(
            model=ASR,
            file=f,
            response_format="diarized_json",
            extra_body={"known_speaker_names": ["agent", "customer"], "known_speaker_references": references},
        )
    assert isinstance(body, TranscriptionDiarized)
    assert_turns(body.segments, talk, ["agent", "customer", "agent", "customer"])


# --- Wyoming ------------------------------------------------------------------------------------------------


def test_with_wyoming_the_ingress_runs_on_the_head_node(url: str) -> None:
    """On the two-node cluster, the ingress replica that runs the Wyoming listener sits on Ray's head node
    (where Serve's proxy is): build_app hands ingress_actor_options' head-node resource to Serve, and Ray
    places the replica by it (tests/unit/test_ray_placement.py checks the options themselves)."""
    from ray._private.state import actors

    import ray
    from talkies.ray.placement import HEAD_NODE

    nodes = [n for n in ray.nodes() if n["Alive"]]
    head = {n["NodeID"] for n in nodes if HEAD_NODE in n["Resources"]}
    assert len(nodes) == 2
    assert len(head) == 1
    ingress = [
        a
        for a in actors().values()
        if a["ActorClassName"] == "ServeReplica:talkies:talkies-ingress" and a["State"] == "ALIVE"
    ]
    assert len(ingress) == 1, [a["ActorClassName"] for a in actors().values()]
    assert ingress[0]["Address"]["NodeID"] in head


async def test_wyoming_transcribes_and_synthesizes_from_the_ingress(url: str, wyoming_port: int) -> None:
    pcm = (np.clip(speak(SENTENCE_A), -1, 1) * 32767).astype("<i2").tobytes()
    async with wyoming_client(wyoming_port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        for offset in range(0, len(pcm), 2048):
            chunk = AudioChunk(rate=16_000, width=2, channels=1, audio=pcm[offset : offset + 2048])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        events = await read_until(client, "transcript")
    assert events[-1].type == "transcript", events[-1]
    assert word_overlap(SENTENCE_A, Transcript.from_event(events[-1]).text) >= 0.5
    async with wyoming_client(wyoming_port) as client:
        voice = SynthesizeVoice(name=f"{TTS}/en-us")
        await client.write_event(Synthesize(text="Hello from Wyoming.", voice=voice).event())
        events = await read_until(client, "audio-stop")
    assert events[0].type == "audio-start"
    assert events[-1].type == "audio-stop"
    audio = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    assert len(audio) > 16_000  # over half a second of audio
    assert await asyncio.to_thread(held_on_model_servers, TTS)


# --- process models -----------------------------------------------------------------------------------------


def test_a_process_model_is_started_and_proxied_by_the_ingress(url: str) -> None:
    answer = httpx.post(
        f"{url}/v1/audio/speech",
        json={"model": EXTERNAL, "input": "hello", "voice": "x", "chunks": 2, "chunk_bytes": 500},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    assert answer.content == b"\x00" * 500 + b"\x01" * 500
    assert json.loads(base64.b64decode(answer.headers["x-received"]))["input"] == "hello"
    assert EXTERNAL not in {m["model"] for s in replica_states(MODEL_SERVER) for m in s["models"]}


# --- /metrics -----------------------------------------------------------------------------------------------


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for family in text_string_to_metric_families(text):
        found += [(s.labels, s.value) for s in family.samples if s.name == name]
    return found


def test_metrics_merge_every_replicas_pool_metrics_labelled_by_replica(url: str, sdk: openai.OpenAI) -> None:
    sdk.audio.speech.create(model=TTS, voice="en-us", input="metrics", response_format="pcm").read()
    external = httpx.post(
        f"{url}/v1/audio/speech", json={"model": EXTERNAL, "input": "x", "voice": "x"}, timeout=60
    )
    assert external.status_code == 200
    text = httpx.get(f"{url}/metrics", timeout=60).text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names)), "a metric family appears twice"
    (replica,) = held_on_model_servers(TTS)
    loaded = {
        (labels["deployment"], labels["replica"], labels["model"]): value
        for labels, value in samples(text, "talkies_model_loaded")
    }
    assert loaded[(MODEL_SERVER, replica, TTS)] == 1.0
    ingress = {key for key in loaded if key[0] == "talkies-ingress"}
    assert loaded[next(key for key in ingress if key[2] == EXTERNAL)] == 1.0  # the ingress runs it
    assert all(loaded[key] == 0.0 for key in ingress if key[2] != EXTERNAL)
    loads = {
        (labels["deployment"], labels["replica"], labels["model"], labels["result"]): value
        for labels, value in samples(text, "talkies_model_loads_total")
    }
    assert loads[(MODEL_SERVER, replica, TTS, "ok")] >= 1.0
    requests = samples(text, "talkies_requests_total")
    assert any(labels["model"] == TTS and labels["status"] == "200" for labels, _ in requests)
