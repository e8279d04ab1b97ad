"""What several benchmarks share: the sentences they speak, WAV bytes, a free port, a server run as a
subprocess (ready once a check passes, terminated after), and timing of the engine calls inside a
server with a bench-only route that hands the times over.

Not a benchmark itself: `make bench` runs `bench/[!_]*.py`. Scripts import it as `bench._harness` after
putting the repository root on `sys.path`.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import time
import wave
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

SENTENCES = (
    "The weather is nice today.",
    "Please call me tomorrow morning.",
    "My name is John and I live in New York.",
    "One two three four five six seven eight nine ten.",
    "Open the door and turn on the light.",
)
ENGINE_SECONDS_ROUTE = "/_bench/engine_seconds"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wav_bytes(pcm: np.ndarray | bytes, rate: int = 16_000) -> bytes:
    """Mono 16-bit WAV of float samples in [-1, 1] (clipped) or of 16-bit PCM bytes."""
    if not isinstance(pcm, bytes):
        pcm = (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def health_answers(url: str) -> bool:
    return httpx.get(f"{url}/healthz", timeout=2).status_code < 500


@contextlib.contextmanager
def server_process(
    argv: Sequence[str],
    port: int,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    ready: Callable[[str], bool] = health_answers,
) -> Iterator[str]:
    """Run `argv` (a server on 127.0.0.1:`port`), yield its URL once `ready(url)` is true (HTTP errors
    count as not yet); terminate it on exit, killing it if it does not stop within a minute."""
    process = subprocess.Popen(list(argv), env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if ready(url):
                    break
            if process.poll() is not None:
                raise RuntimeError(f"the benchmark server exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark server was not ready after {timeout:g} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EngineSeconds:
    """An engine factory wrapper (server side): the time every request spends inside the engines it makes
    (`transcribe`, or `transcribe_stream`, which the service prefers when an engine has it) is recorded.
    `add_route(app)` serves the times collected since the last read at `ENGINE_SECONDS_ROUTE`, so a
    client can split a request's latency into the engine's share and the server's."""

    def __init__(self, factory: Callable[..., Any]) -> None:
        self.factory = factory
        self.seconds: list[float] = []

    def __call__(self, spec: Any, context: Any) -> Any:
        engine = self.factory(spec, context)
        transcribe = engine.transcribe

        def timed(request: Any) -> Any:
            start = time.perf_counter()
            try:
                return transcribe(request)
            finally:
                self.seconds.append(time.perf_counter() - start)

        engine.transcribe = timed
        stream = getattr(engine, "transcribe_stream", None)
        if stream is not None:
            engine.transcribe_stream = lambda request: self._timed_stream(stream(request))
        return engine

    def _timed_stream(self, generator: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
        """`generator`'s pieces and result, with the time spent inside it (not in the consumer) recorded."""
        spent = 0.0
        try:
            while True:
                start = time.perf_counter()
                try:
                    piece = next(generator)
                except StopIteration as stop:
                    return stop.value
                finally:
                    spent += time.perf_counter() - start
                yield piece
        finally:
            generator.close()
            self.seconds.append(spent)

    def take(self) -> list[float]:
        taken = list(self.seconds)
        self.seconds.clear()
        return taken

    def add_route(self, app: Any) -> None:
        app.add_api_route(ENGINE_SECONDS_ROUTE, self.take)


def engine_seconds(client: httpx.Client, url: str) -> float:
    """Client side: the engine time of the requests since the last call, summed."""
    return float(sum(client.get(f"{url}{ENGINE_SECONDS_ROUTE}").json()))
