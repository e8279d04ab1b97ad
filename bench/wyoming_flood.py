"""GET /healthz latency while one Wyoming client floods the server, against the same probe on an idle server.

One real talkies (uvicorn on 127.0.0.1 with the weight-free engines, the Wyoming listener in its lifespan).
A probe thread sends GET /healthz back to back (its own client, so the flooding event loop adds nothing to
its figures) in three phases: idle; while a client sends `--chunks` synthesize-chunks of 1 MB of text without
a sentence end (issue 25: on main the whole pending text was re-split on the event loop at every chunk);
while a client sends `--chunks` 4 MiB audio-chunks declared as 384 kHz / 32-bit / 8 channels. Each phase
reports the probe's median / max and the flood's wall time; the flooding client never waits for an answer
(an old server sends none), it only writes and closes.

    PYTHONPATH=src python bench/wyoming_flood.py [--chunks 64]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.api.audio_helpers import weightfree_registry
from tests.server import serve

from talkies.api.app import create_app
from talkies.settings import load_settings


class Probe:
    def __init__(self, base: str) -> None:
        self.base = base
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=600) as client:
            while not self.stop.is_set() or len(self.latencies) < 5:
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                self.latencies.append(time.perf_counter() - started)


async def flood(port: int, kind: str, chunks: int) -> None:
    from wyoming.audio import AudioChunk, AudioStart
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import SynthesizeChunk, SynthesizeStart

    async with AsyncTcpClient("127.0.0.1", port) as client:
        if kind == "text":
            text = "a" * 1_000_000
            await client.write_event(SynthesizeStart().event())
            for _ in range(chunks):
                await client.write_event(SynthesizeChunk(text=text).event())
        else:
            fmt = {"rate": 384_000, "width": 4, "channels": 8}
            payload = b"\x01" * (4 * 1024 * 1024)
            await client.write_event(AudioStart(**fmt).event())
            for _ in range(chunks):
                await client.write_event(AudioChunk(audio=payload, **fmt).event())


def phase(base: str, port: int, kind: str, chunks: int) -> str:
    probe = Probe(base)
    probe.thread.start()
    started = time.perf_counter()
    if kind == "idle":
        time.sleep(2)
    else:
        asyncio.run(flood(port, kind, chunks))
    wall = time.perf_counter() - started
    probe.stop.set()
    probe.thread.join()
    lat = probe.latencies
    return (
        f"| {kind} | {len(lat)} | {statistics.median(lat) * 1000:.0f} ms | {max(lat) * 1000:.0f} ms "
        f"| {wall:.1f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=64)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            models_file=weightfree_registry(Path(tmp) / "models.json"),
            data_dir=Path(tmp) / "data",
            sweeper_interval=0,
            device="cpu",
            wyoming_uri="tcp://127.0.0.1:0",
        )
        app = create_app(settings)
        with serve(app) as base:
            port = app.state.wyoming.port
            print("| Flood | probes | /healthz median | /healthz max | flood wall time |")
            print("|---|---|---|---|---|")
            for kind in ("idle", "text", "audio"):
                print(phase(base, port, kind, args.chunks), flush=True)


if __name__ == "__main__":
    main()
