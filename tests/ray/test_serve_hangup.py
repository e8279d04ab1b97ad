"""A client that hangs up in the middle of streamed speech on Ray Serve stops the synthesis on the model
server: the ingress cancels its streaming call (Serve's gRPC transport), the replica's generator is
cancelled at its next step, the engine stops at its next `checkpoint`, and the model is free again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.audio_helpers import weightfree_settings
from tests.ray.conftest import RayServe, deploy, in_flight, wait_for
from tests.ray.engines import endless_voice_engine

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-hangup")


@pytest.fixture(scope="module")
def url(ray_serve: RayServe, data_dir: Path) -> Iterator[str]:
    settings = weightfree_settings(data_dir, ray_replica_cpus=0.25)
    with deploy(ray_serve, settings, engine_factory=endless_voice_engine) as base:
        yield base


def test_hanging_up_mid_stream_stops_the_synthesis_on_the_model_server(url: str, data_dir: Path) -> None:
    log = data_dir / "data" / "endless.log"
    body = {"model": "espeak-ng", "input": "On and on.", "response_format": "pcm", "stream_format": "audio"}
    with (
        httpx.Client(base_url=url, timeout=120) as client,
        client.stream("POST", "/v1/audio/speech", json=body) as response,
    ):
        assert response.status_code == 200
        received = 0
        for part in response.iter_bytes():
            received += len(part)
            if received >= 3 * 4800:  # a few chunks in: the stream is live; leaving the block hangs up
                break
    wait_for(lambda: log.exists() and log.read_text().strip() != "", "the engine's generator to close", 120)
    made = int(log.read_text().split()[0])
    assert 0 < made < 2000, f"the engine made {made} chunks: it was not stopped"
    wait_for(lambda: in_flight("espeak-ng") == 0, "the model server to release the model", 120)
