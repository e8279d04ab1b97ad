"""The parakeet_cpp engine on tiny generated Parakeet ONNX exports: no torch on the path, int8 files chosen
by the registry's compute_type, clear load errors, memory given back on unload."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from talkies.engines.base import EngineContext, Region, TranscriptionRequest
from talkies.engines.parakeet_cpp.engine import ParakeetCppEngine
from talkies.errors import CapabilityError, ModelLoadError
from talkies.registry import ModelSpec
from tests.engines.memory_probe import run_probe
from tests.fixtures.parakeet_onnx import build_parakeet_onnx
from tests.fixtures.speech import speech_clip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

NO_TORCH = """
import sys
from pathlib import Path
from talkies.engines import create_engine
from talkies.engines.base import EngineContext, TranscriptionRequest
from talkies.registry import ModelSpec
from tests.fixtures.speech import speech_clip

clip = speech_clip(3.0)
for model_dir in sys.argv[1:]:
    spec = ModelSpec.model_validate({"slug": "p", "executor": "parakeet_cpp", "repo": "test/p"})
    engine = create_engine(spec, EngineContext("p", Path(model_dir), "cpu", cpu_threads=1))
    engine.load()
    result = engine.transcribe(TranscriptionRequest(audio=clip, language="de"))
    assert result.segments, result
    engine.unload()
heavy = sorted(m for m in ("torch", "nemo", "lightning", "pytorch_lightning") if m in sys.modules)
print("heavy:" + ",".join(heavy))
"""


def engine_for(model_dir: Path, **fields: object) -> ParakeetCppEngine:
    spec = ModelSpec.model_validate({"slug": "p", "executor": "parakeet_cpp", "repo": "test/p", **fields})
    return ParakeetCppEngine(spec, EngineContext("p", model_dir, "cpu", cpu_threads=1))


@pytest.fixture(scope="module")
def tdt() -> Path:
    return build_parakeet_onnx("tdt")


@pytest.fixture(scope="module")
def ctc() -> Path:
    return build_parakeet_onnx("ctc")


def test_no_pytorch_is_imported_on_the_engine_path(tdt: Path, ctc: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tdt), str(ctc)],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "heavy:", "torch or NeMo was imported"


def test_regions_are_decoded_with_absolute_times(tdt: Path) -> None:
    engine = engine_for(tdt)
    engine.load()
    clip = speech_clip(8.0)
    regions = (Region(0.5, 2.5), Region(4.0, 7.5))
    result = engine.transcribe(TranscriptionRequest(audio=clip, regions=regions))
    words = [w for s in result.segments for w in s.words]
    assert words
    assert all(any(r.start <= w.start <= w.end <= r.end for r in regions) for w in words)
    assert any(w.start >= 4.0 for w in words), "the second region's words carry its offset"
    assert [s.start for s in result.segments] == sorted(s.start for s in result.segments)
    assert result.duration == pytest.approx(8.0)
    with pytest.raises(CapabilityError, match="cannot translate"):
        engine.transcribe(TranscriptionRequest(audio=clip, task="translate"))
    engine.unload()


def test_segments_stream_as_batches_close_them(tdt: Path) -> None:
    """Batching off (the per-request path): the first region is decoded alone, then batches of batch_size;
    a segment is yielded as soon as no later word can join it (the next region starts a pause later), and
    the streamed segments are the result's. Regions closer than a pause keep their last segment open until
    the next batch. (Cross-request batching: tests/engines/test_asr_batching.py.)"""
    spec = ModelSpec.model_validate({"slug": "p", "executor": "parakeet_cpp", "repo": "test/p"})
    options: dict[str, object] = {"batch_size": 2, "batching": False}
    engine = ParakeetCppEngine(spec, EngineContext("p", tdt, "cpu", cpu_threads=1, options=options))
    engine.load()
    model = engine.require_model()
    batches: list[int] = []

    class Spy:
        def recognize(self, clips: list[object], **kwargs: object) -> object:
            batches.append(len(clips))
            return model.recognize(clips, **kwargs)

    engine.require_model = Spy  # type: ignore[method-assign]
    clip = speech_clip(12.0)
    regions = tuple(Region(start, start + 2.0) for start in (0.0, 3.0, 6.0, 9.0))  # 1 s gaps: 4 segments
    stream = engine.transcribe_stream(TranscriptionRequest(audio=clip, regions=regions))
    first = next(stream)
    assert batches == [1], "the first region's segment comes before the next batch is decoded"
    assert first.end <= 2.0
    streamed = [first]
    while True:
        try:
            streamed.append(next(stream))
        except StopIteration as stop:
            result = stop.value
            break
    assert batches == [1, 2, 1]
    assert [(s.start, s.end, s.text) for s in streamed] == [(s.start, s.end, s.text) for s in result.segments]
    assert len(result.segments) == len(regions)
    assert engine.transcribe(TranscriptionRequest(audio=clip, regions=regions)).text == result.text

    batches.clear()
    close = tuple(Region(start, start + 2.0) for start in (0.0, 2.2, 6.0))  # 0.2 s: may join
    stream = engine.transcribe_stream(TranscriptionRequest(audio=clip, regions=close))
    next(stream)
    assert batches == [1, 2], "with the next region 0.2 s later, the first segment waits for it"
    stream.close()
    engine.unload()


def test_compute_type_selects_the_quantized_files(tdt: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir = tmp_path / "int8"
    model_dir.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(tdt / name, model_dir / name)
    for name in ("encoder-model", "decoder_joint-model"):
        quantize_dynamic(tdt / f"{name}.onnx", model_dir / f"{name}.int8.onnx", weight_type=QuantType.QUInt8)
    engine = engine_for(model_dir, compute_type="int8")
    engine.load()
    assert engine.transcribe(TranscriptionRequest(audio=speech_clip(3.0))).segments
    engine.unload()
    with pytest.raises(ModelLoadError, match=r"encoder-model\.onnx"):
        engine_for(model_dir).load()  # full precision asked, only int8 files there


def test_load_errors_say_what_is_wrong(tdt: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "whisper-like"
    shutil.copytree(tdt, model_dir)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(ModelLoadError, match=r"model_type 'whisper'.*nemo-conformer-tdt"):
        engine_for(model_dir).load()
    (model_dir / "vocab.txt").unlink()
    with pytest.raises(ModelLoadError, match=r"nothing matches vocab\.txt"):
        engine_for(model_dir).load()


def test_unload_drops_the_model(tdt: Path) -> None:
    engine = engine_for(tdt)
    engine.load()
    model = weakref.ref(engine.model)
    engine.unload()
    gc.collect()
    assert model() is None
    assert not engine.loaded


def test_unloading_the_worker_gives_the_memory_back(tdt: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "nemotron-3.5-asr-0.6b"
    shutil.copytree(tdt, model_dir)
    figures = run_probe("parakeet_cpp", model_dir, "process")
    assert figures["worker_pid"] is not None
    assert figures["loaded"] - figures["idle"] > 20 * 1024 * 1024, figures  # the worker was resident
    assert figures["unloaded"] <= figures["idle"] * 1.15, figures
