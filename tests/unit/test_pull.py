"""`talkies pull` against a local server that speaks enough of the Hugging Face hub's API for
huggingface_hub (HF_ENDPOINT points at it): allow-patterns, verification, the completion marker, `--check`,
and a transfer killed half-way that the next pull resumes with a Range request."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from talkies.engines.snapshot import COMPLETE_MARKER, PULL_RECORD, check_snapshot, snapshot_present
from tests.conftest import REPO_ROOT, write_registry
from tests.fakehub import BIG, COMMIT, REPO, FakeHub, running_hub


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with running_hub() as fake:
        yield fake


def _env(tmp_path: Path, hub: FakeHub) -> dict[str, str]:
    registry = write_registry(
        tmp_path / "models.json",
        {
            "tiny": {"executor": "whisper", "repo": REPO},
            "espeak-ng": {"executor": "espeak"},
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKIES_", "HF_"))}
    env.update(
        TALKIES_MODELS_FILE=str(registry),
        TALKIES_DATA_DIR=str(tmp_path / "data"),
        HF_ENDPOINT=hub.url,
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="30",
        PYTHONPATH=str(REPO_ROOT / "src"),
    )
    return env


def _talkies(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talkies", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_pull_fetches_what_the_executor_reads_verifies_and_marks_complete(
    tmp_path: Path, hub: FakeHub
) -> None:
    env = _env(tmp_path, hub)
    model_dir = tmp_path / "data" / "models" / "tiny"
    missing = _talkies(env, "pull", "--check")
    assert missing.returncode == 1
    assert "tiny: missing" in missing.stdout
    assert "espeak-ng: weight-free" in missing.stdout

    pulled = _talkies(env, "pull", "tiny")
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.bin",
        "vocabulary.json",
    ]  # allow-patterns: README.md and the safetensors file are not the whisper executor's
    assert (model_dir / "model.bin").read_bytes() == hub.files["model.bin"]
    marker = json.loads((model_dir / COMPLETE_MARKER).read_text())
    assert marker["revision"] == COMMIT
    assert marker["files"]["model.bin"]["sha256"] == hashlib.sha256(hub.files["model.bin"]).hexdigest()
    assert not (model_dir / PULL_RECORD).exists()
    assert "tiny (all files)" in pulled.stderr  # the overall progress bar

    checked = _talkies(env, "pull", "--check", "tiny")
    assert checked.returncode == 0
    assert "tiny: complete (3 files" in checked.stdout
    again = _talkies(env, "download", "tiny")  # the old name still works; nothing to fetch
    assert again.returncode == 0
    assert "complete (3 files)" in again.stdout

    (model_dir / "vocabulary.json").unlink()
    broken = _talkies(env, "pull", "--check", "tiny")
    assert broken.returncode == 1
    assert "missing or incomplete: vocabulary.json" in broken.stdout
    assert not snapshot_present(model_dir) or check_snapshot(model_dir).status == "incomplete"


def test_interrupted_pull_never_counts_and_resumes(tmp_path: Path, hub: FakeHub) -> None:
    env = _env(tmp_path, hub)
    model_dir = tmp_path / "data" / "models" / "tiny"
    hub.stall_after = BIG // 2
    process = subprocess.Popen(
        [sys.executable, "-m", "talkies", "pull", "tiny"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while hub.sent.get("model.bin") is None:
            assert process.poll() is None, "pull exited before the transfer stalled"
            assert time.monotonic() < deadline, "the transfer never started"
            time.sleep(0.1)
        time.sleep(1.0)  # let the client write what it received
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # a container restarted during first boot
        process.wait(30)
    hub.release.set()

    partial = sum(p.stat().st_size for p in model_dir.rglob("*.part"))
    assert partial > 0  # what arrived before the kill is kept for the resume
    assert not snapshot_present(model_dir)  # files are there, but the pull did not finish
    state = check_snapshot(model_dir)
    assert state.status == "incomplete"
    assert "model.bin" in state.missing
    checked = _talkies(env, "pull", "--check", "tiny")
    assert checked.returncode == 1
    assert "tiny: incomplete" in checked.stdout
    assert "model.bin" in checked.stdout

    hub.stall_after = None
    resumed = _talkies(env, "pull", "tiny")
    assert resumed.returncode == 0, resumed.stderr
    assert f"model.bin bytes={partial}-" in hub.ranges, hub.ranges  # resumed where the kill stopped it
    assert (model_dir / "model.bin").read_bytes() == hub.files["model.bin"]
    assert snapshot_present(model_dir)
    assert check_snapshot(model_dir).status == "complete"


def test_a_file_with_the_wrong_hash_is_refused(tmp_path: Path, hub: FakeHub) -> None:
    env = _env(tmp_path, hub)
    model_dir = tmp_path / "data" / "models" / "tiny"
    hub.listed_sha["model.bin"] = "f" * 64
    failed = _talkies(env, "pull", "tiny")
    assert failed.returncode == 1
    assert "model.bin has SHA-256" in failed.stderr
    assert not (model_dir / COMPLETE_MARKER).exists()
    assert not snapshot_present(model_dir)
    assert not (model_dir / "model.bin").exists()  # removed, so the next pull fetches it afresh


def test_hub_unreachable_names_what_to_do(tmp_path: Path, hub: FakeHub) -> None:
    env = _env(tmp_path, hub)
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    failed = _talkies(env, "pull", "tiny")
    assert failed.returncode == 1
    assert "talkies pull tiny" in failed.stderr


def test_a_snapshot_laid_out_by_hand_counts_as_present(tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "x"
    model_dir.mkdir(parents=True)
    assert not snapshot_present(model_dir)
    assert check_snapshot(model_dir).status == "missing"
    (model_dir / "model.bin").write_bytes(b"weights")
    assert snapshot_present(model_dir)
    assert check_snapshot(model_dir).status == "unverified"
    (model_dir / PULL_RECORD).write_text(json.dumps({"files": {"model.bin": {"size": 99}}}))
    assert not snapshot_present(model_dir)
    assert check_snapshot(model_dir).missing == ["model.bin"]


def test_check_holds_a_hand_laid_snapshot_to_what_its_executor_needs(tmp_path: Path, hub: FakeHub) -> None:
    env = _env(tmp_path, hub)
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # --check never asks the hub
    model_dir = tmp_path / "data" / "models" / "tiny"
    model_dir.mkdir(parents=True)
    (model_dir / "model.bin").write_bytes(b"8 bytes!")
    one_file = _talkies(env, "pull", "--check", "tiny")
    assert one_file.returncode == 1, one_file.stdout + one_file.stderr
    assert (
        "tiny: incomplete (laid out by hand, 1 files): missing config.json, tokenizer.json, vocabulary.*"
        in (one_file.stdout)
    )
    assert "unverified" not in one_file.stdout
    assert "talkies: incomplete: tiny" in one_file.stderr
    assert not snapshot_present(model_dir, ("config.json", "model.bin"))
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (model_dir / name).write_text("{}")
    complete = _talkies(env, "pull", "--check", "tiny")
    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert "tiny: unverified (laid out by hand, 4 files" in complete.stdout
    assert not (model_dir / COMPLETE_MARKER).exists()  # accepted as it is: no marker, no pull record
    assert not (model_dir / PULL_RECORD).exists()
    models = _talkies(env, "models")
    assert models.returncode == 0
    assert "snapshot not pulled yet" not in next(
        line for line in models.stdout.splitlines() if "tiny" in line
    )
