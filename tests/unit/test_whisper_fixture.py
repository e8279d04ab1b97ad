"""The whisper test-model builder: cache key, atomic install, layout of the installed snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.cache import install_snapshot
from tests.fixtures.whisper import REQUIRED_FILES, SHAPES, build_whisper, shape_key


def test_cache_key_changes_with_shape() -> None:
    keys = {shape_key(s) for s in SHAPES}
    assert len(keys) == len(SHAPES)
    assert shape_key("micro") == shape_key("micro")


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="known: micro"):
        build_whisper("huge")


@pytest.mark.slow
def test_built_model_is_cached_complete_and_installs_as_a_snapshot(tmp_path: Path) -> None:
    built = build_whisper("micro")
    assert build_whisper("micro") == built  # second call: cache hit
    assert all((built / name).is_file() for name in REQUIRED_FILES)
    assert not any(p.name.startswith(".whisper-micro-") for p in built.parent.iterdir() if p.is_dir())
    assert not (built / "hf").exists()
    assert not (built.parent / "hf").exists()
    config = json.loads((built / "config.json").read_text())
    assert len(config["lang_ids"]) == 99
    target = install_snapshot(built, tmp_path, "whisper-micro")
    assert target == tmp_path / "models" / "whisper-micro"
    assert (target / "model.bin").stat().st_size == (built / "model.bin").stat().st_size
