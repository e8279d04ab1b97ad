"""Upload limits on POST /v1/audio/transcriptions: 413 while reading, memory flat, temp files removed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from talkies.api.app import create_app
from tests.api.audio_helpers import SENTENCE_A, speak, weightfree_settings, write_wav
from tests.server import asgi_client, serve

pytestmark = [pytest.mark.anyio, pytest.mark.pinned_isolation]

BOUNDARY = "talkiesboundary"
MB = 1024 * 1024


def multipart_stream(size: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A multipart body whose `file` part is `size` bytes of noise, produced lazily (never held whole)."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\npocketsphinx-en-us\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    while sent < size:
        piece = block[: min(chunk, size - sent)]
        sent += len(piece)
        yield piece
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def async_stream(size: int) -> AsyncIterator[bytes]:
    for piece in multipart_stream(size):
        yield piece


class PeakRss:
    """Highest resident set size of this process while the block runs, sampled every 2 ms."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        self.start = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def tmp_files(settings_dir: Path) -> list[Path]:
    tmp = settings_dir / "data" / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


async def test_chunked_upload_over_cap_is_413_with_flat_memory(tmp_path: Path) -> None:
    app = create_app(weightfree_settings(tmp_path, max_upload_bytes=1 * MB))
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with asgi_client(app) as client:
        warm = await client.post("/v1/audio/transcriptions", content=async_stream(1000), headers=headers)
        assert warm.status_code == 400  # noise, not audio: the path is warm
        with PeakRss() as rss:
            response = await client.post(
                "/v1/audio/transcriptions", content=async_stream(50 * MB), headers=headers
            )
    assert response.status_code == 413
    assert "TALKIES_MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert rss.growth < 8 * MB, f"RSS grew by {rss.growth / MB:.1f} MB"
    assert tmp_files(tmp_path) == []


async def test_large_upload_under_cap_streams_to_disk(tmp_path: Path) -> None:
    app = create_app(weightfree_settings(tmp_path, max_upload_bytes=100 * MB))
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with asgi_client(app) as client:
        await client.post("/v1/audio/transcriptions", content=async_stream(1000), headers=headers)
        with PeakRss() as rss:
            response = await client.post(
                "/v1/audio/transcriptions", content=async_stream(40 * MB), headers=headers
            )
    assert response.status_code == 400  # read to the end, then refused as undecodable
    assert rss.growth < 16 * MB, f"RSS grew by {rss.growth / MB:.1f} MB"
    assert tmp_files(tmp_path) == []


def test_declared_length_over_cap_is_413_before_the_body(tmp_path: Path) -> None:
    app = create_app(weightfree_settings(tmp_path, max_upload_bytes=1 * MB))
    with serve(app) as base_url:
        url = urlsplit(base_url)
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
                + f"Content-Length: {50 * MB}\r\n\r\n".encode()
            )
            # Not one body byte is sent: the answer must come from the header alone.
            reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")


@pytest.mark.slow
def test_temp_files_are_removed_after_success_and_failure(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", [speak(SENTENCE_A)])
    app = create_app(weightfree_settings(tmp_path))
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        for fields in ({}, {"diarization": "true"}, {"response_format": "nope"}, {"model": "espeak-ng"}):
            data = {"model": "pocketsphinx-en-us", **fields}
            client.post("/v1/audio/transcriptions", data=data, files={"file": ("a.wav", wav.read_bytes())})
    assert tmp_files(tmp_path) == []
