"""The event loop stays free while an engine works (issue 19, item 8): `GET /healthz` answers quickly
during a long job on every weight-free engine (pocketsphinx transcribing, espeak-ng speaking), with the
engine in the server process and in a worker process, against a real `talkies serve`.

pocketsphinx decodes a request's audio in one call, and its Python binding's `process_raw` holds the GIL for
the whole decode: in the server process /healthz took 5.7 s during a 35 s transcription (a Kubernetes
liveness probe with a 1 s timeout would restart the container). The engine now drives the decoder through
the C API with ctypes, which releases the GIL, so the loop stays free in the server process too; in a
worker process it always did.

What is asserted, and why not "every probe under 100 ms": this is a latency bound on a *different*
request, measured on a shared 2-core machine where the engine keeps one core busy and other jobs may take
the other. The OS can deschedule the server for tens of milliseconds at any moment, whatever the code
does. So: the median and the 90th percentile of the probes must be under 100 ms (a loop that is really
free answers in a few ms; a GIL-holding engine fails both by a wide margin, every probe of a stall waiting
for the whole decode), and the slowest probe under a generous 1 s (the old stall was seconds). The clip
is 12 s of speech (not the issue's 35 s): long enough for about 100 probes during the decode, and the stall
being measured grows with the length of one engine call, so a longer clip only makes the test slower.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.speech import speech_clip, write_wav
from tests.live_server import live_server

pytestmark = pytest.mark.slow

ENGINES: dict[str, dict[str, Any]] = {
    "pocketsphinx-en-us": {"executor": "pocketsphinx"},
    "espeak-ng": {"executor": "espeak"},
}
SENTENCE = "The quick brown fox jumps over the lazy dog while the weather stays nice all day. "


class _Job:
    """One long request in a thread."""

    def __init__(self, url: str, slug: str, clip: Path) -> None:
        self.status = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(url, slug, clip), daemon=True)
        self.thread.start()

    def _run(self, url: str, slug: str, clip: Path) -> None:
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                if slug == "espeak-ng":
                    body = {"model": slug, "input": SENTENCE * 40, "response_format": "wav"}
                    answer = client.post("/v1/audio/speech", json=body)
                else:
                    files = {"file": ("long.wav", clip.read_bytes(), "audio/wav")}
                    answer = client.post("/v1/audio/transcriptions", data={"model": slug}, files=files)
            self.status = answer.status_code
        except BaseException as exc:
            self.error = exc


def _in_flight(client: httpx.Client) -> int:
    return sum(row["in_flight"] for row in client.get("/api/ps").json()["models"])


CASES = [
    ("pocketsphinx-en-us", "inprocess"),
    ("pocketsphinx-en-us", "process"),
    ("espeak-ng", "inprocess"),
    ("espeak-ng", "process"),
]


@pytest.mark.parametrize(("slug", "isolation"), CASES)
def test_healthz_answers_quickly_during_a_long_job(tmp_path: Path, slug: str, isolation: str) -> None:
    clip = write_wav(tmp_path / "long.wav", speech_clip(12.0))
    models = {slug: {**ENGINES[slug], "isolation": isolation}}
    with (
        live_server(tmp_path, models, TALKIES_PRELOAD=slug) as server,
        httpx.Client(base_url=server.url, timeout=30) as probe,
    ):
        job = _Job(server.url, slug, clip)
        deadline = time.monotonic() + 30
        while _in_flight(probe) == 0 and job.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        latencies: list[float] = []
        while job.thread.is_alive():
            start = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.05)
        job.thread.join()
        assert job.error is None, job.error
        assert job.status == 200, (job.status, server.log()[-2000:])

    assert len(latencies) >= 10, latencies  # the job really ran while we probed
    latencies.sort()
    median = statistics.median(latencies)
    p90 = latencies[int(0.9 * (len(latencies) - 1))]
    figures = f"{len(latencies)} probes, median {median * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, max "
    figures += f"{latencies[-1] * 1000:.0f} ms"
    print(figures)
    assert median < 0.1, figures
    assert p90 < 0.1, figures
    assert latencies[-1] < 1.0, figures
