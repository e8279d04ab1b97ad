"""Batching is active on a shipped-default entry: an entry that leaves `max_concurrency` unset admits
`max_batch_size` requests at once when TALKIES_BATCHING is on, so two concurrent HTTP requests share one
engine call (registry/batching.py). The entry is the shipped onnx-asr Parakeet one on the tiny export,
with a 10 s batch window: with one request admitted at a time the second could only start after the
first's batch closed alone on that timer, so the shared call is counted, not timed."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.fixtures.cache import install_snapshot
from tests.fixtures.parakeet_onnx import build_parakeet_onnx
from tests.fixtures.speech import speech_clip, write_wav
from tests.server import serve

pytestmark = pytest.mark.slow

SLUG = "parakeet-tdt-0.6b-v2-onnx"


def app_for(tmp: Path, batching: bool) -> object:
    data_dir = tmp / "data"
    install_snapshot(build_parakeet_onnx("tdt"), data_dir, SLUG)
    shipped = json.loads((Path(__file__).parents[2] / "models-cpu.json").read_text())["models"][SLUG]
    assert "max_concurrency" not in shipped
    entry = {**shipped, "max_batch_size": 2, "max_batch_wait_ms": 10_000}
    entry.pop("compute_type", None)  # the shipped int8 choice: the test export is full precision
    (tmp / "models.json").write_text(json.dumps({"models": {SLUG: entry}}))
    settings = load_settings(
        models_file=tmp / "models.json", data_dir=data_dir, device="cpu", cpu_threads=1, sweeper_interval=0,
        batching=batching,
    )  # fmt: skip
    return create_app(settings)


@pytest.mark.parametrize("batching", [True, False])
def test_two_concurrent_requests_on_a_default_entry_share_a_call(tmp_path: Path, batching: bool) -> None:
    app = app_for(tmp_path, batching)
    wav = write_wav(tmp_path / "clip.wav", speech_clip(4.0))
    spec = app.state.registry.models[SLUG]  # type: ignore[attr-defined]
    assert spec.max_concurrency == (2 if batching else 1)
    with serve(app) as url, httpx.Client(base_url=url, timeout=300) as client:  # type: ignore[arg-type]

        def transcribe(_: int) -> httpx.Response:
            with wav.open("rb") as f:
                return client.post(
                    "/v1/audio/transcriptions",
                    data={"model": SLUG, "response_format": "json"},
                    files={"file": ("clip.wav", f, "audio/wav")},
                )

        with ThreadPoolExecutor(2) as threads:
            answers = list(threads.map(transcribe, range(2)))
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        engine = app.state.pool.peek_engine(SLUG)  # type: ignore[attr-defined]
        snapshot = engine.batch_snapshot()
    if not batching:
        assert snapshot is None
        return
    assert snapshot is not None
    sizes, _, timer_closed = snapshot
    assert sizes == {2: 1}, "both requests' clips in one call"
    assert timer_closed == 0
