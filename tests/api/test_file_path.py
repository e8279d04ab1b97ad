"""`file_path` on POST /v1/audio/transcriptions: a staged file or a URL, with the real pocketsphinx engine."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from talkies.api.app import create_app
from tests.api.audio_helpers import SENTENCE_A, speak, weightfree_settings, word_overlap, write_wav
from tests.server import asgi_client, serve

pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]
MODEL = "pocketsphinx-en-us"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("clips") / "a.wav", [speak(SENTENCE_A)])


@pytest.fixture(scope="module")
def origin(clip: Path) -> Iterator[tuple[str, Counter[str]]]:
    """A plain HTTP server on loopback serving the clip's directory; counts requests per path."""
    hits: Counter[str] = Counter()

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            hits[self.path] += 1
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(clip.parent)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    # The origin below lives on loopback: trusted explicitly, as a user would trust a LAN host.
    settings = weightfree_settings(tmp_path_factory.mktemp("server"), url_allowlist="127.0.0.1")
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120) as http:
        yield http


def transcribe(client: httpx.Client, **fields: Any) -> httpx.Response:
    return client.post("/v1/audio/transcriptions", data={"model": MODEL, **fields}, files={"x": ("", b"")})


def test_staged_file(client: httpx.Client, clip: Path) -> None:
    assert client.put("/v1/files/clips/a.wav", content=clip.read_bytes()).status_code == 201
    response = transcribe(client, file_path="clips/a.wav")
    assert response.status_code == 200, response.text
    assert word_overlap(SENTENCE_A, response.json()["text"]) >= 0.6
    leading = transcribe(client, file_path="/clips/a.wav")  # an empty first segment: the name rule says no
    assert leading.status_code == 400
    assert "leading '/'" in leading.json()["detail"]


def test_url_is_downloaded_once(client: httpx.Client, origin: tuple[str, Counter[str]]) -> None:
    base, hits = origin
    for fmt in ("json", "text"):
        response = transcribe(client, file_path=f"{base}/a.wav", response_format=fmt)
        assert response.status_code == 200, response.text
        assert word_overlap(SENTENCE_A, response.text) >= 0.6
    assert hits["/a.wav"] == 1
    listed = [f["path"] for f in client.get("/v1/files").json()["files"]]
    assert not any(p.endswith("-a.wav") for p in listed)  # the URL cache is not in the staging area


def test_file_path_errors(client: httpx.Client, clip: Path, origin: tuple[str, Counter[str]]) -> None:
    base, _ = origin
    both = client.post(
        "/v1/audio/transcriptions",
        data={"model": MODEL, "file_path": "clips/a.wav"},
        files={"file": ("a.wav", clip.read_bytes())},
    )
    assert both.status_code == 400
    assert "not both" in both.json()["detail"]
    neither = transcribe(client)
    assert neither.status_code == 400
    missing = transcribe(client, file_path="clips/missing.wav")
    assert missing.status_code == 404
    assert "not found" in missing.json()["detail"]
    for hostile in ("../etc/passwd", "a//b.wav", "a\\b.wav"):
        assert transcribe(client, file_path=hostile).status_code == 400
    gone = transcribe(client, file_path=f"{base}/nope.wav")
    assert gone.status_code == 400
    assert "HTTP 404" in gone.json()["detail"]
    metadata = transcribe(client, file_path="http://169.254.169.254/latest/meta-data/")
    assert metadata.status_code == 400
    assert "cloud-metadata" in metadata.json()["detail"]


@pytest.mark.anyio
async def test_guard_refuses_loopback(tmp_path: Path, origin: tuple[str, Counter[str]]) -> None:
    base, hits = origin
    before = sum(hits.values())
    app = create_app(weightfree_settings(tmp_path))  # the defaults
    async with asgi_client(app) as http:
        fields = {"model": MODEL, "file_path": f"{base}/a.wav"}
        response = await http.post("/v1/audio/transcriptions", data=fields, files={"x": ("", b"")})
    assert response.status_code == 400
    assert "TALKIES_URL_ALLOWLIST" in response.json()["detail"]
    assert sum(hits.values()) == before
