"""The Kokoro executors' catalogs before load(): snapshot files and installed G2P decide what is listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkies.engines.base import EngineContext
from talkies.engines.kokoro import onnx as onnx_module
from talkies.engines.kokoro import pytorch as kokoro_module
from talkies.engines.kokoro.onnx import KokoroOnnxEngine
from talkies.engines.kokoro.pytorch import KokoroEngine
from talkies.errors import EngineError, UnknownVoiceError
from talkies.registry import ModelSpec


def _torch_engine(model_dir: Path, **fields: object) -> KokoroEngine:
    spec = ModelSpec(slug="kokoro-82m", executor="kokoro", repo="hexgrad/Kokoro-82M", **fields)  # type: ignore[arg-type]
    return KokoroEngine(spec, EngineContext(slug="kokoro-82m", model_dir=model_dir, device="cpu"))


def test_voices_follow_the_snapshot_files(tmp_path: Path) -> None:
    assert len(_torch_engine(tmp_path / "absent").voices()) == 41
    (tmp_path / "voices").mkdir()
    for name in ("bm_george", "af_sky", "jf_alpha", "zm_yunxi"):
        (tmp_path / "voices" / f"{name}.pt").write_bytes(b"")
    engine = _torch_engine(tmp_path)
    assert [v.name for v in engine.voices()] == ["af_sky", "bm_george"]  # catalog order, no ja/zh
    assert [v.name for v in engine.voices() if v.default] == ["af_sky"]  # af_heart absent: the first
    assert [v.name for v in _torch_engine(tmp_path, default_voice="bm_george").voices() if v.default] == [
        "bm_george"
    ]


def test_languages_without_g2p_are_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kokoro_module, "_installed", lambda module: module != "spacy")
    names = [v.name for v in _torch_engine(tmp_path / "absent").voices()]
    assert len(names) == 13  # no English without spaCy: es, fr, hi, it, pt remain
    assert not any(n.startswith(("a", "b")) for n in names)
    assert [v.name for v in _torch_engine(tmp_path / "absent").voices() if v.default] == ["ef_dora"]

    monkeypatch.setattr(onnx_module.importlib.util, "find_spec", lambda name: None)
    spec = ModelSpec(slug="n", executor="kokoro_nvidia", repo="nvidia/kokoro-82M-onnx-opt")
    assert KokoroOnnxEngine(spec, EngineContext(slug="n", model_dir=tmp_path, device="cpu")).voices() == []


def test_voice_checks_work_before_load_and_synthesis_needs_it(tmp_path: Path) -> None:
    engine = _torch_engine(tmp_path / "absent")
    engine.check_voice("af_bella(3)+bf_emma(1)")
    with pytest.raises(UnknownVoiceError, match="'af_bella' "):
        engine.check_voice("af_bella(0)")
    from talkies.engines.base import SpeechRequest

    with pytest.raises(EngineError, match="not loaded"):
        engine.synthesize(SpeechRequest(text="Hi.", voice="af_heart"))
