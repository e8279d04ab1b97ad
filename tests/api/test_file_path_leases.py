"""`file_path` URLs on the HTTP routes: leased while in use, fetched inside the hang-up cancellation.

Real pocketsphinx behind a real uvicorn socket (or ASGI), a real origin server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from talkies.api.app import create_app
from talkies.engines import create_engine
from talkies.engines.base import Engine, EngineContext
from talkies.registry import ModelSpec
from talkies.settings import Settings
from tests.api.audio_helpers import SENTENCE_A, speak, weightfree_settings, word_overlap, write_wav
from tests.fixtures.cache import install_snapshot
from tests.fixtures.whisper import build_whisper
from tests.server import asgi_client, serve

pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]
SPHINX = "pocketsphinx-en-us"
WHISPER = "whisper-micro"
BOUNDED = {"beam_size": 1, "max_new_tokens": 10, "condition_on_previous_text": False}


class Origin(ThreadingHTTPServer):
    """Serves the clip as /a.wav and /b.wav; /hold.wav sends its head and a few bytes, then holds until
    `release` is set, noting when the downloader closes the connection instead (`aborted`)."""

    daemon_threads = True

    def __init__(self, clip: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.clip = clip
        self.hits: Counter[str] = Counter()
        self.started = threading.Event()
        self.release = threading.Event()
        self.aborted = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OriginHandler(BaseHTTPRequestHandler):
    server: Origin

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        clip = self.server.clip
        self.server.hits[self.path] += 1
        self.send_response(200 if self.path in ("/a.wav", "/b.wav", "/hold.wav") else 404)
        self.send_header("Content-Length", str(len(clip)))
        self.end_headers()
        if self.path != "/hold.wav":
            self.wfile.write(clip)
            return
        self.wfile.write(clip[:100])
        self.wfile.flush()
        self.server.started.set()
        self.connection.settimeout(0.05)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.server.release.is_set():
                self.wfile.write(clip[100:])
                return
            try:
                if self.connection.recv(1) == b"":  # the downloader closed its end
                    self.server.aborted.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                self.server.aborted.set()
                return


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_wav(tmp_path_factory.mktemp("clips") / "a.wav", [speak(SENTENCE_A)]).read_bytes()


@pytest.fixture
def origin(clip: bytes) -> Iterator[Origin]:
    server = Origin(clip)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def settings_for(tmp: Path, **overrides: Any) -> Settings:
    """pocketsphinx (transcriptions) and a generated Whisper (translations); loopback origins trusted."""
    install_snapshot(build_whisper("micro"), tmp / "data", WHISPER)
    registry = {
        "models": {
            SPHINX: {"executor": "pocketsphinx"},
            WHISPER: {"executor": "whisper", "repo": "test/whisper-micro"},
        }
    }
    (tmp / "leases-models.json").write_text(json.dumps(registry))
    return weightfree_settings(
        tmp, models_file=tmp / "leases-models.json", url_allowlist="127.0.0.1", **overrides
    )


def bounded(spec: ModelSpec, context: EngineContext) -> Engine:
    """The real engines; Whisper's random weights decode a few tokens (they never stop on their own)."""
    if spec.executor == "whisper":
        context = replace(context, options={**context.options, **BOUNDED})
    return create_engine(spec, context)


def wait_for(predicate: Callable[[], bool], limit: float = 60.0) -> None:
    """Poll until `predicate()` holds (a bound against hanging, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def raw_post(base: str, route: str, fields: dict[str, str]) -> socket.socket:
    """Send a whole multipart POST on a raw socket (so the test can hang up whenever it likes)."""
    request = httpx.Request("POST", base + route, data=fields, files={"x": ("", b"")})
    body = request.read()
    head = [f"POST {route} HTTP/1.1", f"Host: {request.url.netloc.decode()}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "connection")]
    port = httpx.URL(base).port
    assert port is not None
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()
    return int(received.split(b" ", 2)[1]), bytes(received)


ROUTES = {"/v1/audio/transcriptions": SPHINX, "/v1/audio/translations": WHISPER}


@pytest.mark.anyio
@pytest.mark.parametrize("route", list(ROUTES))
async def test_cached_url_evicted_between_fetch_and_decode_is_still_transcribed(
    tmp_path: Path, origin: Origin, clip: bytes, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    # The cache holds one clip: downloading b evicts the least recently used entry, a, unless a is leased.
    app = create_app(settings_for(tmp_path, download_cache_bytes=len(clip) * 3 // 2), engine_factory=bounded)
    async with asgi_client(app, timeout=120) as http:
        service = app.state.transcription
        real = service.transcribe_file

        async def another_download_first(path: Path, options: Any) -> Any:
            await app.state.downloads.fetch(f"{origin.base}/b.wav")  # between this fetch and the decode
            return await real(path, options)

        monkeypatch.setattr(service, "transcribe_file", another_download_first)
        fields = {"model": ROUTES[route], "file_path": f"{origin.base}/a.wav", "response_format": "json"}
        response = await http.post(route, data=fields, files={"x": ("", b"")})
    assert response.status_code == 200, response.text
    assert origin.hits["/a.wav"] == origin.hits["/b.wav"] == 1
    if route.endswith("transcriptions"):
        assert word_overlap(SENTENCE_A, response.json()["text"]) >= 0.6


@pytest.mark.parametrize("route", list(ROUTES))
def test_client_hanging_up_during_a_url_fetch_cancels_it(tmp_path: Path, origin: Origin, route: str) -> None:
    app = create_app(settings_for(tmp_path), engine_factory=bounded)
    with serve(app) as base:
        sock = raw_post(base, route, {"model": ROUTES[route], "file_path": f"{origin.base}/hold.wav"})
        assert origin.started.wait(60)
        sock.close()
        assert origin.aborted.wait(60)  # the download's connection was closed: the fetch was cancelled
        wait_for(lambda: app.state.lifecycle.in_flight == 0)
        cache = app.state.downloads.directory
        assert (list(cache.iterdir()) if cache.is_dir() else []) == []  # no partial body left behind
    assert origin.hits["/hold.wav"] == 1


def test_a_waiter_behind_another_download_leaves_with_its_client(tmp_path: Path, origin: Origin) -> None:
    app = create_app(settings_for(tmp_path))
    url = f"{origin.base}/hold.wav"
    fields = {"model": SPHINX, "file_path": url}
    route = "/v1/audio/transcriptions"
    with serve(app) as base:
        first = raw_post(base, route, fields)
        assert origin.started.wait(60)
        second = raw_post(base, route, fields)
        wait_for(lambda: app.state.downloads.fetches(url) == 2)  # the second waits for the first's download
        second.close()
        wait_for(lambda: app.state.lifecycle.in_flight == 1)  # it left at once, the download still held
        assert app.state.downloads.fetches(url) == 1
        assert not origin.aborted.is_set()  # the first request's download goes on
        origin.release.set()
        status, answer = read_status(first)
    assert status == 200, answer
    assert word_overlap(SENTENCE_A, answer.split(b"\r\n\r\n", 1)[1].decode()) >= 0.6
    assert origin.hits["/hold.wav"] == 1
