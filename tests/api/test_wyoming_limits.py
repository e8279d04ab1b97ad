"""Wyoming cannot stall or swell the server (issue 25, item 1): a real talkies (uvicorn on a socket, the
Wyoming listener in its lifespan) against clients that send too much, too wide, too many or too little."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from talkies.api.app import create_app
from talkies.settings import Settings, load_settings
from tests.api.audio_helpers import weightfree_registry
from tests.live_server import LiveServer, free_port, live_server
from tests.server import serve

wyoming = pytest.importorskip("wyoming")

from wyoming.info import Describe  # noqa: E402

from tests.wyoming_helpers import read_event, wyoming_client  # noqa: E402

pytestmark = pytest.mark.anyio
TIMEOUT = 120.0
MiB = 1024 * 1024


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(
        models_file=weightfree_registry(tmp_path / "models.json"),
        data_dir=tmp_path / "data",
        sweeper_interval=0,
        device="cpu",
        wyoming_uri="tcp://127.0.0.1:0",
        **overrides,
    )


@contextmanager
def _talkies(settings: Settings) -> Iterator[tuple[str, int]]:
    app = create_app(settings)
    with serve(app) as base:
        yield base, app.state.wyoming.port


class _HealthProbe:
    """GET /healthz in a loop from its own thread (its own client, so the test's event loop, busy
    writing Wyoming frames, adds nothing to the figures) until stopped; keeps each latency."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=TIMEOUT) as client:
            while not self._stop.is_set() or len(self.latencies) < 5:
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                self.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> _HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)


def _frame(kind: str, data: dict[str, Any], payload: bytes = b"") -> bytes:
    """One Wyoming event as the `wyoming` package writes it (header line, data block, payload), encoded
    once so that the flooding client spends no CPU of its own per event."""
    block = json.dumps(data).encode()
    header: dict[str, Any] = {"type": kind, "version": version("wyoming"), "data_length": len(block)}
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + block + payload


@contextmanager
def _live(tmp_path: Path, **env: str) -> Iterator[tuple[LiveServer, int]]:
    """`talkies serve` in its own process (its event loop and memory apart from this client's)."""
    port = free_port()
    models = {"pocketsphinx-en-us": {"executor": "pocketsphinx"}, "espeak-ng": {"executor": "espeak"}}
    with live_server(tmp_path, models, TALKIES_WYOMING_URI=f"tcp://127.0.0.1:{port}", **env) as server:
        yield server, port


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))
    if header.get("data_length"):
        header["data"] = json.loads(await reader.readexactly(header["data_length"]))
    if header.get("payload_length"):
        await reader.readexactly(header["payload_length"])
    return dict(header)


async def test_megabyte_synthesis_chunks_get_an_error_and_healthz_stays_fast(tmp_path: Path) -> None:
    """64 x 1 MB of text without a sentence end: an `error` naming TALKIES_MAX_INPUT_CHARS, the rest is
    dropped as it arrives, and /healthz answers meanwhile (on main it went from 6 ms to 2.2 s)."""
    chunk = _frame("synthesize-chunk", {"text": "a" * 1_000_000})
    with _live(tmp_path) as (server, port), _HealthProbe(server.url) as probe:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_frame("synthesize-start", {}))
        for _ in range(64):
            writer.write(chunk)
            await writer.drain()
        refused = await _read_frame(reader)
        writer.write(_frame("synthesize-stop", {}) + _frame("describe", {}))
        stopped = await _read_frame(reader)
        still_open = await _read_frame(reader)
        writer.close()
    assert refused["type"] == "error"
    assert "TALKIES_MAX_INPUT_CHARS" in refused["data"]["text"]
    assert stopped["type"] == "synthesize-stopped"  # nothing was spoken: the text was refused
    assert still_open["type"] == "info"
    # loose bounds for a busy CI machine: the point is that no probe waits behind the text
    assert statistics.median(probe.latencies) < 0.1, probe.latencies
    assert max(probe.latencies) < 2.0, probe.latencies


async def test_wide_audio_is_cut_at_the_byte_cap_with_bounded_rss(tmp_path: Path) -> None:
    """384 kHz / 4 bytes / 8 channels: TALKIES_MAX_AUDIO_SECONDS alone would allow ~177 GB; the byte cap
    (TALKIES_MAX_UPLOAD_BYTES) cuts the utterance and what follows is not held."""
    fmt = {"rate": 384_000, "width": 4, "channels": 8}
    chunk = _frame("audio-chunk", fmt, b"\x01\x02\x03\x04" * MiB)  # 4 MiB (the frame limit)
    chunks = 48  # 192 MiB sent
    with _live(tmp_path, TALKIES_MAX_UPLOAD_BYTES=str(8 * MiB)) as (server, port):
        process = psutil.Process(server.process.pid)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_frame("describe", {}))
        assert (await _read_frame(reader))["type"] == "info"
        before = process.memory_info().rss
        writer.write(_frame("audio-start", fmt))
        for _ in range(chunks):
            writer.write(chunk)
            await writer.drain()
        refused = await _read_frame(reader)
        writer.write(_frame("describe", {}))
        after_chunks = await _read_frame(reader)  # every chunk has been read by the server by now
        grown = process.memory_info().rss - before
        writer.write(_frame("audio-stop", {}) + _frame("describe", {}))
        after_stop = await _read_frame(reader)
        writer.close()
    assert refused["type"] == "error"
    assert refused["data"]["code"] == "payload_too_large"
    assert "TALKIES_MAX_UPLOAD_BYTES" in refused["data"]["text"]
    assert after_chunks["type"] == "info"
    assert after_stop["type"] == "info"  # audio-stop of a refused utterance answers nothing more
    assert grown < 64 * MiB, f"RSS grew {grown / MiB:.0f} MiB for {chunks * 4} MiB sent"


async def test_connections_over_the_cap_are_refused(tmp_path: Path) -> None:
    with _talkies(_settings(tmp_path, wyoming_max_connections=2)) as (_, port):
        async with wyoming_client(port) as first, wyoming_client(port) as second:
            for client in (first, second):
                await client.write_event(Describe().event())
                assert (await read_event(client)).type == "info"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            refused = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))
            rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # then the server closes
            writer.close()
        answer = None
        for _ in range(200):  # the server notices the two hang-ups on its own schedule
            async with wyoming_client(port) as third:
                await third.write_event(Describe().event())
                answer = await asyncio.wait_for(third.read_event(), TIMEOUT)
            if answer is not None and answer.type == "info":
                break
            await asyncio.sleep(0.05)
    assert refused["type"] == "error"
    data = refused.get("data") or json.loads(rest[: refused["data_length"]])
    assert data["code"] == "too_many_connections"
    assert "TALKIES_WYOMING_MAX_CONNECTIONS" in data["text"]
    assert answer is not None
    assert answer.type == "info"


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connected, says nothing
        b'{"type": "descr',  # half a header line
        b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, '
        b'"payload_length": 1000}\n' + b"\0" * 10,  # half a payload
    ],
    ids=["silent", "half-header", "half-payload"],
)
async def test_idle_reads_time_out(tmp_path: Path, sent: bytes) -> None:
    with _talkies(_settings(tmp_path, wyoming_idle_timeout=0.5)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(sent)
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # closed after the error
        writer.close()
    assert answer["type"] == "error"
    data = answer.get("data") or json.loads(rest[: answer["data_length"]])
    assert data["code"] == "idle_timeout"
    assert "TALKIES_WYOMING_IDLE_TIMEOUT" in data["text"]
