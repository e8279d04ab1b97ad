"""`talkies serve` with timers on the stages of a transcription request (bench-only, never imported by
the server): run as `python bench/_timed_server.py` with the usual TALKIES_* environment.

Each stage is timed in the server process, for every request, and `GET /_bench/stages` hands over (and
clears) the lists, so a benchmark client can split the wall time it saw into:

    request   the whole ASGI call, first byte of the request to the last of the answer
    form      reading the multipart form to a temp file (talkies.api.uploads)
    decode    the file to 16 kHz float32 PCM (PyAV), in its worker thread, decode slot included
    acquire   waiting for the model in the pool (admission, residency)
    engine    the engine's generator driven to its end from the service (thread hops included); with
              process isolation also the pipe / shared-memory round trips to the worker
    model     the time spent inside the Whisper engine's own generator: in the server process, or (process
              isolation) in the worker, which runs this script as `__mp_main__` (multiprocessing's spawn
              does) and appends its figures to a file the parent reads
    ipc       (process isolation) engine minus model: pipe and shared-memory round trips, thread hops

BENCH_PYAV_ONLY=1 serves with the old decode path (every file through PyAV, no
talkies.audio.pcm_wav), so one run can compare the two.

Not a benchmark itself (underscore: `make bench` skips it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

STAGES_ROUTE = "/_bench/stages"
STAGES: defaultdict[str, list[float]] = defaultdict(list)


def _worker_file(server_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"talkies-bench-stages-{server_pid}.txt"


def _record(stage: str, start: float) -> None:
    STAGES[stage].append(time.perf_counter() - start)


def _timed_async(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            _record(stage, start)

    return timed


def _timed_context(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """An async context manager factory whose `__aenter__` is timed."""

    @contextlib.asynccontextmanager
    async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        start = time.perf_counter()
        manager = fn(*args, **kwargs)
        value = await manager.__aenter__()
        _record(stage, start)
        try:
            yield value
        except BaseException:
            if not await manager.__aexit__(*sys.exc_info()):
                raise
        else:
            await manager.__aexit__(None, None, None)

    return timed


def _timed_generator(stage: str, fn: Callable[..., Generator[Any, None, Any]]) -> Callable[..., Any]:
    """A generator function whose own time (not its consumer's) is summed per call."""

    def timed(*args: Any, **kwargs: Any) -> Generator[Any, None, Any]:
        spent = 0.0
        generator = fn(*args, **kwargs)
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(generator)
                except StopIteration as stop:
                    return stop.value
                finally:
                    spent += time.perf_counter() - start
                yield item
        finally:
            generator.close()
            STAGES[stage].append(spent)

    return timed


def _timed_steps(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The service's async generator of transcript events, timed from first step to its result."""

    async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        start = time.perf_counter()
        try:
            async for event in fn(*args, **kwargs):
                yield event
        finally:
            _record(stage, start)

    return timed


def _time_model_in_worker() -> None:
    """In an engine worker: the Whisper engine's own time per call, appended to the server's file."""
    from talkies.engines.whisper import engine as whisper_engine

    model = whisper_engine.WhisperEngine.transcribe_stream
    timed = _timed_generator("model", model)
    target = _worker_file(os.getppid())

    def flushed(*args: Any, **kwargs: Any) -> Generator[Any, None, Any]:
        try:
            return (yield from timed(*args, **kwargs))
        finally:
            with target.open("a") as out:
                out.write(f"{STAGES['model'].pop()}\n")

    whisper_engine.WhisperEngine.transcribe_stream = flushed  # type: ignore[method-assign]


def _worker_figures() -> list[float]:
    path = _worker_file(os.getpid())
    with contextlib.suppress(FileNotFoundError):
        lines = path.read_text().split()
        path.unlink()
        return [float(line) for line in lines]
    return []


def install() -> None:
    from talkies.api import app as app_module
    from talkies.api import audio
    from talkies.engines.whisper import engine as whisper_engine
    from talkies.pool import ModelPool
    from talkies.services.transcription import TranscriptionService

    if os.environ.get("BENCH_PYAV_ONLY") == "1":
        from talkies.audio import decode

        decode.read_pcm16_mono = lambda *_, **__: None  # type: ignore[assignment]
    audio.receive_audio_form = _timed_context("form", audio.receive_audio_form)  # type: ignore[assignment]
    TranscriptionService.decode = _timed_async("decode", TranscriptionService.decode)  # type: ignore[method-assign]
    TranscriptionService.events = _timed_steps("engine", TranscriptionService.events)  # type: ignore[method-assign]
    ModelPool.acquire = _timed_context("acquire", ModelPool.acquire)  # type: ignore[method-assign]
    model = whisper_engine.WhisperEngine.transcribe_stream
    whisper_engine.WhisperEngine.transcribe_stream = _timed_generator("model", model)  # type: ignore[method-assign]

    create_app = app_module.create_app

    def timed_app(settings: Any) -> Any:
        app = create_app(settings)

        def take() -> dict[str, list[float]]:
            taken = {name: list(values) for name, values in STAGES.items()}
            STAGES.clear()
            worker = _worker_figures()
            if worker:
                taken["model"] = worker
            return taken

        app.add_api_route(STAGES_ROUTE, take)
        inner = app.build_middleware_stack

        def outer_timer() -> Any:
            stack = inner()

            async def timed(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] != "http" or scope["path"] == STAGES_ROUTE:
                    await stack(scope, receive, send)
                    return
                start = time.perf_counter()
                try:
                    await stack(scope, receive, send)
                finally:
                    _record("request", start)

            return timed

        app.build_middleware_stack = outer_timer  # type: ignore[method-assign]
        return app

    app_module.create_app = timed_app  # type: ignore[assignment]


if __name__ == "__mp_main__":
    _time_model_in_worker()
elif __name__ == "__main__":
    install()
    from talkies.cli import main

    sys.exit(main(["serve"]))
