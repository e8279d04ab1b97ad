"""The engine host, driven directly: real worker processes running the test engines of fake_engines."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from talkies.engines.base import (
    EngineContext,
    SpeechRequest,
    Synthesizer,
    Transcriber,
    TranscriptionRequest,
)
from talkies.errors import (
    EngineTimeoutError,
    InvalidAudioError,
    ModelLoadError,
    UnknownVoiceError,
    WorkerCrashedError,
)
from talkies.registry import ModelSpec
from talkies.workers import ProcessEngine
from talkies.workers import link as host_link
from talkies.workers.ipc import INLINE_ARRAY_BYTES, SharedArray
from tests.engines.fake_engines import TARGET, ChunkSynthesizer, EchoTranscriber

ASR = f"{TARGET}:EchoTranscriber"
TTS = f"{TARGET}:ChunkSynthesizer"


def _spec(slug: str, executor: str, **fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"executor": executor, "slug": slug, **fields})


def _context(slug: str, tmp_path: Path, **options: object) -> EngineContext:
    return EngineContext(slug=slug, model_dir=tmp_path / slug, device="cpu", options=options)


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Any]:
    made: list[ProcessEngine] = []

    def make(target: str = ASR, *, max_concurrency: int = 1, **kwargs: Any) -> Any:
        options = kwargs.pop("options", {})
        asr = target.endswith("Transcriber")
        slug = "fake-asr" if asr else "fake-tts"
        spec = _spec(slug, "pocketsphinx" if asr else "espeak", max_concurrency=max_concurrency)
        engine = ProcessEngine(spec, _context(slug, tmp_path, **options), target=target, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.unload()


def _transcribe(engine: Any, audio: np.ndarray, prompt: str | None = None) -> str:
    text: str = engine.transcribe(TranscriptionRequest(audio=audio, prompt=prompt)).text
    return text


def test_long_audio_crosses_through_shared_memory_not_the_pipe(make_engine: Any, monkeypatch: Any) -> None:
    engine = make_engine()
    engine.load()
    sent: list[Any] = []
    original_open = host_link.WorkerLink.open

    def spy(self: Any, method: str, payload: Any, slug: str | None = None) -> Any:
        sent.append((len(pickle.dumps(payload)), payload[1]))
        return original_open(self, method, payload, slug)

    monkeypatch.setattr(host_link.WorkerLink, "open", spy)
    audio = np.random.default_rng(0).uniform(-1, 1, 16_000 * 600).astype(np.float32)  # 10 min, 38 MB
    before = set(os.listdir("/dev/shm"))

    text = _transcribe(engine, audio)

    size, dtype, total, pid = text.split()
    assert (int(size), dtype) == (audio.size, "float32")
    assert float(total) == pytest.approx(float(np.sum(audio, dtype=np.float64)), abs=1e-4)
    assert pid == f"pid={engine.worker_pid}" != f"pid={os.getpid()}"
    pickled, ref = sent[0]
    assert isinstance(ref, SharedArray)
    assert pickled < 4096  # the request travelled without its 38 MB of audio
    assert set(os.listdir("/dev/shm")) == before  # too large to keep: that block is gone


def test_shared_blocks_are_reused_and_unlinked_at_unload(make_engine: Any, monkeypatch: Any) -> None:
    engine = make_engine()
    engine.load()
    names: list[str] = []
    original_open = host_link.WorkerLink.open
    monkeypatch.setattr(
        host_link.WorkerLink,
        "open",
        lambda self, m, p, s=None: names.append(p[1].name) or original_open(self, m, p, s),
    )
    before = set(os.listdir("/dev/shm"))
    rng = np.random.default_rng(1)

    for seconds in (5, 4, 5):
        audio = rng.uniform(-1, 1, 16_000 * seconds).astype(np.float32)
        size, _, total, _ = _transcribe(engine, audio).split()
        assert int(size) == audio.size
        assert float(total) == pytest.approx(float(audio.sum(dtype=np.float64)), abs=1e-3)

    assert len(set(names)) == 1  # one block carried all three requests
    assert set(os.listdir("/dev/shm")) - before == {names[0].lstrip("/")}
    engine.unload()
    assert set(os.listdir("/dev/shm")) == before


def test_a_block_the_engine_kept_is_never_reused(make_engine: Any) -> None:
    engine = make_engine()
    engine.load()
    ones = np.ones(16_000 * 5, np.float32)

    _transcribe(engine, ones, prompt="keep")  # the engine holds on to this audio
    _transcribe(engine, np.zeros_like(ones))  # must not land in the block the engine still reads

    assert _transcribe(engine, ones[:10], prompt="kept") == f"{ones.size:.1f}"


def test_short_audio_is_sent_inline(make_engine: Any) -> None:
    engine = make_engine()
    engine.load()
    audio = np.linspace(-1, 1, INLINE_ARRAY_BYTES // 8, dtype=np.float32)
    assert _transcribe(engine, audio).startswith(f"{audio.size} float32 0.000000")


def test_worker_killed_mid_request_fails_that_request_and_the_model_reloads(make_engine: Any) -> None:
    engine = make_engine()
    engine.load()
    first_pid = engine.worker_pid

    with pytest.raises(WorkerCrashedError, match=r"model 'fake-asr'.*killed by SIGKILL"):
        _transcribe(engine, np.zeros(1600, np.float32), prompt="crash")

    assert engine.worker_pid is None
    with pytest.raises(WorkerCrashedError, match="fake-asr"):  # no hang on a dead worker
        _transcribe(engine, np.zeros(1600, np.float32))
    engine.load()
    assert engine.worker_pid not in (None, first_pid)
    assert _transcribe(engine, np.ones(1600, np.float32)).startswith("1600 float32 1600.000000")


def test_every_request_in_flight_fails_when_the_worker_dies(make_engine: Any) -> None:
    engine = make_engine(max_concurrency=2)
    engine.load()
    errors: list[BaseException] = []

    def sleeper() -> None:
        try:
            _transcribe(engine, np.zeros(16, np.float32), prompt="sleep:30")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=sleeper)
    thread.start()
    with pytest.raises(WorkerCrashedError):
        _transcribe(engine, np.zeros(16, np.float32), prompt="crash")
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], WorkerCrashedError)


def test_a_worker_that_never_answers_is_killed_after_the_timeout(make_engine: Any) -> None:
    engine = make_engine(call_timeout=1.0)
    engine.load()
    pid = engine.worker_pid

    with pytest.raises(EngineTimeoutError, match=r"made no progress for 1s.*timed out"):
        _transcribe(engine, np.zeros(16, np.float32), prompt="hang")

    assert not psutil.pid_exists(pid)
    assert engine.worker_pid is None


@pytest.mark.parametrize("kind", ["domain", "foreign"])
def test_load_errors_keep_their_type_and_message(make_engine: Any, tmp_path: Path, kind: str) -> None:
    context = _context("fake-asr", tmp_path, load_error=kind)
    in_process = EchoTranscriber(_spec("fake-asr", "pocketsphinx"), context)
    with pytest.raises((ModelLoadError, FileNotFoundError)) as expected:
        in_process.load()
    engine = make_engine(options={"load_error": kind})

    with pytest.raises(type(expected.value)) as caught:
        engine.load()

    assert type(caught.value) is type(expected.value)
    assert str(caught.value) == str(expected.value)
    assert engine.worker_pid is None


def test_a_worker_that_dies_while_loading_is_a_load_error(make_engine: Any) -> None:
    engine = make_engine(options={"load_error": "crash"})
    with pytest.raises(ModelLoadError, match=r"'fake-asr'.*died while loading \(killed by SIGKILL\)"):
        engine.load()


def test_request_errors_keep_their_type_and_the_worker_survives(make_engine: Any) -> None:
    engine = make_engine()
    engine.load()
    pid = engine.worker_pid

    with pytest.raises(InvalidAudioError, match="audio is silent") as caught:
        _transcribe(engine, np.zeros(16, np.float32), prompt="bad-audio")
    assert caught.value.param == "file"
    with pytest.raises(RuntimeError, match=r"^engine bug$"):
        _transcribe(engine, np.zeros(16, np.float32), prompt="bug")

    assert engine.worker_pid == pid
    assert _transcribe(engine, np.zeros(16, np.float32)).startswith("16 ")


def test_streaming_synthesis_yields_chunks_as_they_are_produced(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(TTS)
    engine.load()
    gate = tmp_path / "gate"
    chunks = engine.synthesize(SpeechRequest("hi", "alpha", options={"chunks": 3, "gate": str(gate)}))

    first = next(chunks)  # the worker cannot produce the second chunk until the gate opens
    gate.touch()
    rest = list(chunks)

    assert [int(c.pcm[0]) for c in [first, *rest]] == [0, 1, 2]
    assert {c.sample_rate for c in rest} == {24_000}


def test_closing_a_stream_cancels_the_synthesis_in_the_worker(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(TTS)
    engine.load()
    marker = tmp_path / "marker"
    chunks = engine.synthesize(SpeechRequest("hi", "alpha", options={"chunks": 50, "marker": str(marker)}))
    next(chunks)
    chunks.close()

    assert len(list(engine.synthesize(SpeechRequest("hi", "beta", options={"chunks": 2})))) == 2
    assert marker.exists()
    assert int(marker.read_text()) < 50


def test_stream_errors_and_crashes(make_engine: Any) -> None:
    engine = make_engine(TTS)
    engine.load()
    with pytest.raises(UnknownVoiceError, match="'nobody' not found"):
        next(engine.synthesize(SpeechRequest("hi", "nobody")))

    chunks = engine.synthesize(SpeechRequest("hi", "alpha", options={"chunks": 3, "crash_at": 1}))
    assert next(chunks).pcm[0] == 0
    with pytest.raises(WorkerCrashedError, match="fake-tts"):
        next(chunks)


def test_voices_are_answered_in_the_parent_without_loading(make_engine: Any) -> None:
    engine = make_engine(TTS)
    voices = engine.voices()
    assert [v.name for v in voices] == ["alpha", "beta"]
    assert voices[0].origin == f"pid={os.getpid()}"
    engine.check_voice("alpha+beta")  # the engine's own validation, blends included
    with pytest.raises(UnknownVoiceError):
        engine.check_voice("alpha+nobody")
    assert engine.worker_pid is None


def test_the_proxy_has_exactly_the_capabilities_of_the_real_engine(make_engine: Any) -> None:
    asr, tts = make_engine(ASR, options={"translate": True}), make_engine(TTS)
    assert isinstance(asr, Transcriber)
    assert not isinstance(asr, Synthesizer)
    assert isinstance(tts, Synthesizer)
    assert not isinstance(tts, Transcriber)
    assert not hasattr(tts, "transcribe")
    assert not hasattr(asr, "check_voice")
    assert not hasattr(asr, "voices")
    assert asr.can_translate is False  # before load: the class default, read in the parent
    asr.load()
    assert asr.can_translate is True  # after load: what the loaded engine says
    assert isinstance(ChunkSynthesizer, type)


def test_concurrent_requests_run_concurrently_in_one_worker(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(max_concurrency=2)
    engine.load()
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    results: dict[int, str] = {}

    def call(size: int) -> None:
        results[size] = _transcribe(engine, np.ones(size, np.float32), prompt=f"rendezvous:{meeting}")

    threads = [threading.Thread(target=call, args=(size,)) for size in (100, 200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results[100].startswith("100 ")
    assert results[200].startswith("200 ")


def test_unload_ends_the_worker_and_gives_its_memory_back(make_engine: Any) -> None:
    server = psutil.Process()
    engine = make_engine(options={"alloc_mb": 300})
    idle = _total_rss(server)

    engine.load()
    pid = engine.worker_pid
    assert engine.worker_rss() > 300 * 1024 * 1024
    assert _total_rss(server) - idle > 300 * 1024 * 1024
    engine.unload()

    assert not psutil.pid_exists(pid)
    assert engine.worker_pid is None
    assert engine.worker_rss() is None
    assert _total_rss(server) < idle * 1.15
    engine.unload()  # idempotent


def test_unload_escalates_when_the_worker_does_not_exit(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(grace=0.5)
    engine.load()
    pid = engine.worker_pid
    errors: list[BaseException] = []

    def stuck() -> None:
        try:
            _transcribe(engine, np.zeros(16, np.float32), prompt=f"hang:{started}")
        except BaseException as exc:
            errors.append(exc)

    started = tmp_path / "started"
    thread = threading.Thread(target=stuck)
    thread.start()
    while not started.exists():
        time.sleep(0.01)
    engine.unload()  # the worker's engine thread never returns: exit, then SIGTERM ends it
    thread.join(10)

    assert not psutil.pid_exists(pid)
    assert [type(e) for e in errors] == [WorkerCrashedError]


def _total_rss(process: psutil.Process) -> int:
    rss = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += child.memory_info().rss
    return rss


def test_workers_exit_when_the_server_is_killed(tmp_path: Path) -> None:
    """An orphaned worker never keeps a model's memory: its pipe closes and it exits, even mid-request."""
    server = textwrap.dedent(
        f"""
        import threading, time
        import numpy as np
        from pathlib import Path
        from talkies.engines.base import EngineContext, TranscriptionRequest
        from talkies.workers import ProcessEngine
        from talkies.registry import ModelSpec

        spec = ModelSpec.model_validate({{"executor": "pocketsphinx", "slug": "orphan"}})
        engine = ProcessEngine(spec, EngineContext("orphan", Path("/x"), "cpu"), target={ASR!r})
        engine.load()
        request = TranscriptionRequest(np.zeros(16, np.float32), prompt="hang")
        threading.Thread(target=engine.transcribe, args=(request,), daemon=True).start()
        print(engine.worker_pid, flush=True)
        time.sleep(3600)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.Popen([sys.executable, "-c", server], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        worker = psutil.Process(int(process.stdout.readline()))
        process.kill()
        process.wait()
        worker.wait(timeout=10)  # raises TimeoutExpired if the orphan lingers
    finally:
        process.kill()
        process.wait()
