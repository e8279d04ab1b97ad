"""`POST /api/pull` and `DELETE /api/models/{slug}` on a real server (uvicorn on a socket) against the local
fake hub (tests/fakehub.py): Ollama-shaped progress in order with totals that add up, a transfer cut off
half-way that the next pull resumes, two pulls that make one download (one client leaving does not stop it),
errors as NDJSON lines, auth, `installed` in /v1/models, and a first use that pulls, logs and counts."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from talkies.api.app import create_app
from talkies.engines.snapshot import COMPLETE_MARKER
from talkies.settings import load_settings
from tests.conftest import REPO_ROOT, write_registry
from tests.fakehub import BIG, REPO, FakeHub, running_hub
from tests.server import serve

TOKEN = "pull-token"
WANTED = ("model.bin", "config.json", "vocabulary.json")  # what the whisper executor's patterns keep
TIMEOUT = httpx.Timeout(300.0)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The fake hub, and the environment the server's pull runner inherits pointing at it."""
    with running_hub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "30")
        monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT / "src"))
        yield fake


@pytest.fixture
def server(tmp_path: Path, hub: FakeHub, request: pytest.FixtureRequest) -> Iterator[str]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    registry = write_registry(
        tmp_path / "models.json",
        {
            "tiny": {"executor": "whisper", "repo": REPO, "download_bytes": 123},
            "espeak-ng": {"executor": "espeak"},
        },
    )
    settings = load_settings(
        models_file=registry,
        data_dir=tmp_path / "data",
        sweeper_interval=0,
        device="cpu",
        engine_isolation="inprocess",
        **overrides,
    )
    with serve(create_app(settings)) as base:
        yield base


def pull(base: str, model: str, **headers: str) -> tuple[int, list[dict[str, Any]]]:
    with httpx.stream(
        "POST", f"{base}/api/pull", json={"model": model}, headers=headers, timeout=TIMEOUT
    ) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson") or r.status_code == 401
        lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
    return r.status_code, lines


def card(base: str, slug: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{base}/v1/models/{slug}", headers=headers).json()
    return answer


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def file_lines(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    per_file: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.get("status", "").startswith("pulling ") and "completed" in line:
            per_file.setdefault(line["status"].removeprefix("pulling "), []).append(line)
    return per_file


def test_pull_streams_progress_in_order_with_totals_that_add_up(
    server: str, hub: FakeHub, tmp_path: Path
) -> None:
    before = card(server, "tiny")
    assert before["installed"] is False
    assert before["download_bytes"] == 123  # the registry's estimate until the hub was listed
    assert before["pull"] is None

    status, lines = pull(server, "tiny")
    assert status == 200
    statuses = [line.get("status") for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert not any("error" in line for line in lines)
    listed = next(line for line in lines if "download_bytes" in line)
    expected = {name: len(hub.files[name]) for name in WANTED}
    assert listed["download_bytes"] == sum(expected.values())
    assert listed["files"] == len(WANTED)

    per_file = file_lines(lines)
    assert set(per_file) == set(WANTED)
    for name, progress in per_file.items():
        completed = [line["completed"] for line in progress]
        assert completed == sorted(completed), name  # never goes back
        assert {line["total"] for line in progress} == {expected[name]}
        assert completed[-1] == expected[name]
    assert per_file["model.bin"][0]["digest"].startswith("sha256:")
    assert sum(progress[-1]["total"] for progress in per_file.values()) == listed["download_bytes"]
    verifying = statuses.index("verifying sha256 digest")
    assert all(0 < statuses.index(f"pulling {name}") < verifying for name in WANTED)

    after = card(server, "tiny")
    assert after["installed"] is True
    assert after["download_bytes"] == sum(expected.values())  # now the hub's listing
    model_dir = tmp_path / "data" / "models" / "tiny"
    assert (model_dir / "model.bin").read_bytes() == hub.files["model.bin"]
    assert (model_dir / COMPLETE_MARKER).is_file()

    again_status, again = pull(server, "tiny")  # a complete snapshot: nothing to fetch
    assert (again_status, again) == (200, [{"status": "success"}])
    assert hub.gets["model.bin"] == 1
    once = httpx.post(f"{server}/api/pull", json={"name": "tiny", "stream": False})  # Ollama's older field
    assert (once.status_code, once.json()) == (200, {"status": "success"})

    deleted = httpx.delete(f"{server}/api/models/tiny")
    assert deleted.json() == {"model": "tiny", "deleted": True}
    assert card(server, "tiny")["installed"] is False
    assert not model_dir.exists()
    assert httpx.delete(f"{server}/api/models/tiny").json() == {"model": "tiny", "deleted": False}


def test_an_interrupted_transfer_is_an_error_line_and_the_next_pull_resumes(
    server: str, hub: FakeHub, tmp_path: Path
) -> None:
    hub.drop_after = BIG // 2
    status, lines = pull(server, "tiny")
    assert status == 200  # the stream had started: the failure is its last line
    assert "error" in lines[-1]
    assert "talkies pull tiny" in lines[-1]["error"]
    assert {"status": "success"} not in lines
    assert card(server, "tiny")["installed"] is False
    parts = list((tmp_path / "data" / "models" / "tiny").rglob("model.bin.part"))
    assert parts
    assert parts[0].stat().st_size > 0  # what arrived is kept for the resume
    kept = parts[0].stat().st_size

    hub.drop_after = None
    status, lines = pull(server, "tiny")
    assert status == 200
    assert lines[-1] == {"status": "success"}
    assert f"model.bin bytes={kept}-" in hub.ranges, hub.ranges
    resumed = file_lines(lines)["model.bin"]
    assert resumed[0]["completed"] == kept  # the progress starts where the first pull stopped
    assert resumed[-1]["completed"] == BIG
    model_bin = tmp_path / "data" / "models" / "tiny" / "model.bin"
    assert model_bin.read_bytes() == hub.files["model.bin"]
    assert card(server, "tiny")["installed"] is True


def test_two_pulls_make_one_download_and_a_client_leaving_does_not_stop_it(server: str, hub: FakeHub) -> None:
    hub.pause_after = BIG // 4
    first: list[dict[str, Any]] = []
    left = threading.Event()

    def leaving_client() -> None:
        """Reads until model.bin is under way, then hangs up."""
        with httpx.stream("POST", f"{server}/api/pull", json={"model": "tiny"}, timeout=TIMEOUT) as response:
            for line in response.iter_lines():
                if line.strip():
                    first.append(json.loads(line))
                if first and first[-1].get("status") == "pulling model.bin":
                    break
        left.set()

    thread = threading.Thread(target=leaving_client)
    thread.start()
    assert hub.paused.wait(120), "model.bin's transfer never started"
    assert left.wait(120)
    thread.join(30)

    in_flight = card(server, "tiny")["pull"]
    assert in_flight is not None
    assert in_flight["status"] == "pulling"
    ps = httpx.get(f"{server}/api/ps").json()
    assert "tiny" in ps["pulls"]

    second_lines: list[dict[str, Any]] = []

    def second_client() -> None:
        second_lines.extend(pull(server, "tiny")[1])

    second = threading.Thread(target=second_client)
    second.start()
    hub.resume.set()
    second.join(300)
    assert second_lines[0]["status"] == "pulling manifest"  # a joiner sees the pull so far, then the rest
    assert second_lines[-1] == {"status": "success"}
    assert hub.gets["model.bin"] == 1  # one download for both
    assert card(server, "tiny")["installed"] is True


def test_unknown_model_and_hub_errors_are_ndjson_error_lines(server: str, hub: FakeHub) -> None:
    status, lines = pull(server, "no-such-model")
    assert status == 404
    assert len(lines) == 1
    assert "no-such-model" in lines[0]["error"]

    hub.fail_listing = True
    status, lines = pull(server, "tiny")
    assert status == 200
    assert lines[-1].keys() == {"error"}
    assert "fetching acme/tiny-whisper failed" in lines[-1]["error"]
    assert card(server, "tiny")["installed"] is False
    once = httpx.post(f"{server}/api/pull", json={"model": "tiny", "stream": False}, timeout=TIMEOUT)
    assert once.status_code == 503  # not streamed: the failure is the status, with the usual error body
    assert "fetching acme/tiny-whisper failed" in once.json()["error"]["message"]

    assert pull(server, "espeak-ng") == (200, [{"status": "success"}])  # weight-free: nothing to fetch
    assert card(server, "espeak-ng")["installed"] is True
    assert card(server, "espeak-ng")["download_bytes"] == 0


@pytest.mark.parametrize("server", [{"auth_token": TOKEN}], indirect=True)
def test_pull_and_delete_need_the_token(server: str, hub: FakeHub) -> None:
    assert httpx.post(f"{server}/api/pull", json={"model": "tiny"}).status_code == 401
    assert httpx.delete(f"{server}/api/models/tiny").status_code == 401
    assert hub.gets["model.bin"] == 0
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, lines = pull(server, "tiny", **auth)
    assert (status, lines[-1]) == (200, {"status": "success"})
    assert card(server, "tiny", **auth)["installed"] is True
    assert httpx.delete(f"{server}/api/models/tiny", headers=auth).json()["deleted"] is True


def test_a_loaded_model_is_not_deleted(server: str) -> None:
    assert httpx.post(f"{server}/api/ps/espeak-ng").status_code == 200
    refused = httpx.delete(f"{server}/api/models/espeak-ng")
    assert refused.status_code == 409
    assert "unload it first" in refused.json()["error"]["message"]
    assert httpx.delete(f"{server}/api/ps/espeak-ng").status_code == 200
    assert httpx.delete(f"{server}/api/models/espeak-ng").json() == {"model": "espeak-ng", "deleted": False}
    assert httpx.delete(f"{server}/api/models/nope").status_code == 404


def test_a_first_use_pulls_logs_progress_and_counts(
    server: str, hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="talkies.services.pulls")
    loaded = httpx.post(f"{server}/api/ps/tiny", timeout=TIMEOUT)  # a request that needs the model
    # The fake hub's weights are random bytes: the pull succeeds, the load after it cannot.
    assert loaded.status_code in (503, 500), loaded.text
    assert card(server, "tiny")["installed"] is True
    assert hub.gets["model.bin"] == 1
    metrics = scrape(server)
    assert (
        metrics[
            ("talkies_model_pulls_total", (("model", "tiny"), ("result", "ok"), ("trigger", "first_use")))
        ]
        == 1
    )
    assert metrics[("talkies_model_pull_bytes_total", (("model", "tiny"),))] == sum(
        len(hub.files[n]) for n in WANTED
    )
    assert metrics[("talkies_model_pull_in_progress", (("model", "tiny"),))] == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "pulling tiny: 100% (8.0 of 8.0 MiB)" in messages, messages
    assert any(m.startswith(("pulling tiny: 0%", "pulling tiny: 10%")) for m in messages), messages


def test_download_bytes_becomes_the_hub_listings_size_without_a_pull(server: str, hub: FakeHub) -> None:
    assert card(server, "tiny")["download_bytes"] == 123  # the estimate; the listing is read meanwhile
    listed = sum(len(hub.files[name]) for name in WANTED)
    deadline = time.monotonic() + 120
    while (size := card(server, "tiny")["download_bytes"]) != listed:
        assert size == 123
        assert time.monotonic() < deadline, "the hub's listing was never read"
        time.sleep(0.2)
    assert hub.gets["model.bin"] == 0  # read from the listing: nothing was downloaded
    assert card(server, "tiny")["installed"] is False
