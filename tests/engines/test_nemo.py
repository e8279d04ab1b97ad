"""NeMo engines in-process on generated `.nemo` models: batching, prompts, shared weights, dtypes.

The HTTP behaviour is in tests/api/test_nemo_http.py; these look at what the wire cannot show: how many
`transcribe()` calls NeMo gets for a long file, which prompt Canary decodes with, and how many times the
weights are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from talkies.engines.base import EngineContext, Region, TranscriptionRequest
from talkies.engines.common import SHARED_WEIGHTS
from talkies.engines.nemo.canary import CanaryEngine
from talkies.engines.nemo.parakeet import ParakeetEngine
from talkies.errors import CapabilityError, ModelLoadError
from talkies.registry import ModelSpec
from tests.fixtures.nemo import install_nemo

pytestmark = pytest.mark.slow

REGIONS = (Region(0.5, 3.0), Region(4.0, 6.5), Region(8.0, 9.0), Region(10.0, 15.5), Region(16.0, 19.0))


def context(data_dir: Path, slug: str, **options: Any) -> EngineContext:
    return EngineContext(slug, data_dir / "models" / slug, "cpu", cpu_threads=1, options=options)


def audio(seconds: float = 20.0) -> np.ndarray[Any, Any]:
    return (np.random.default_rng(0).standard_normal(int(16_000 * seconds)) * 0.1).astype(np.float32)


def spy_transcribe(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    model = engine.model.model
    real = model.transcribe

    def spy(clips: list[Any], **kwargs: Any) -> Any:
        calls.append({"clips": len(clips), **kwargs})
        return real(clips, **kwargs)

    monkeypatch.setattr(model, "transcribe", spy)
    return calls


def test_parakeet_decodes_every_region_in_one_batched_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_nemo("tdt", tmp_path, "pk")
    spec = ModelSpec(slug="pk", executor="parakeet", repo="t/pk", languages=("en",))
    engine = ParakeetEngine(spec, context(tmp_path, "pk", nemo_batch_size=3, batching=False))
    engine.load()
    try:
        calls = spy_transcribe(engine, monkeypatch)
        result = engine.transcribe(TranscriptionRequest(audio=audio(), regions=REGIONS))
        assert calls == [
            {"clips": 5, "batch_size": 3, "timestamps": True, "return_hypotheses": True, "verbose": False}
        ]
        assert result.language == "en"
        for segment in result.segments:
            region = next(r for r in REGIONS if r.start <= segment.start < r.end)
            assert region.start <= segment.start <= segment.end <= region.end
            for word in segment.words:
                assert segment.start <= word.start <= word.end <= segment.end
                assert word.probability is None or 0.0 <= word.probability <= 1.0
        assert {r.start for r in REGIONS} >= {s.start for s in result.segments if s.words}
        with pytest.raises(CapabilityError):
            engine.transcribe(TranscriptionRequest(audio=audio(2.0), task="translate"))
    finally:
        engine.unload()


def test_canary_prompts_and_shared_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_nemo("canary", tmp_path, "cn")
    install_nemo("canary", tmp_path, "cn-de2en", name="cn")
    base = ModelSpec(slug="cn", executor="canary_multitask", repo="t/canary", default_source_lang="en")
    de2en = ModelSpec(
        slug="cn-de2en",
        executor="canary_multitask",
        repo="t/canary",
        default_source_lang="de",
        default_target_lang="en",
        default_task="s2t_translation",
        languages=("de",),
    )
    first = CanaryEngine(base, context(tmp_path, "cn", batching=False))
    second = CanaryEngine(de2en, context(tmp_path, "cn-de2en"))
    first.load()
    second.load()
    key = first.weights_key()
    try:
        assert key == second.weights_key()
        assert SHARED_WEIGHTS.loads(key) == 1, "the second slug took the loaded weights"
        assert first.model is second.model
        assert first.languages == ("en", "de", "fr", "es")
        assert second.languages == ("de",)
        calls = spy_transcribe(first, monkeypatch)

        def prompt_of(engine: CanaryEngine, **request: Any) -> dict[str, Any]:
            calls.clear()
            engine.transcribe(TranscriptionRequest(audio=audio(3.0), **request))
            config = calls[0]["override_config"]
            slots = config.prompt[0]["slots"]
            return {k: slots[k] for k in ("source_lang", "target_lang")}

        assert prompt_of(first) == {"source_lang": "en", "target_lang": "en"}
        assert prompt_of(first, language="fr") == {"source_lang": "fr", "target_lang": "fr"}
        assert prompt_of(first, language="de", task="translate") == {"source_lang": "de", "target_lang": "en"}
        assert prompt_of(second) == {"source_lang": "de", "target_lang": "en"}
        calls.clear()
        first.transcribe(TranscriptionRequest(audio=audio(), regions=REGIONS))
        assert calls[0]["clips"] == 5
        assert calls[0]["override_config"].batch_size == 4
    finally:
        first.unload()
        assert SHARED_WEIGHTS.users(key) == {"cn-de2en"}
        assert second.model is not None
        second.unload()
        assert SHARED_WEIGHTS.users(key) == frozenset()


def test_canary_english_only_cannot_translate(tmp_path: Path) -> None:
    install_nemo("canary-en", tmp_path, "c180")
    spec = ModelSpec(slug="c180", executor="canary_multitask", repo="t/c180")
    assert CanaryEngine.spec_can_translate(spec) is None  # no languages listed: the tokenizer decides
    engine = CanaryEngine(spec, context(tmp_path, "c180"))
    engine.load()
    try:
        assert engine.languages == ("en",)
        assert engine.can_translate is False
        with pytest.raises(CapabilityError):
            engine.transcribe(TranscriptionRequest(audio=audio(2.0), task="translate"))
    finally:
        engine.unload()
    assert CanaryEngine.spec_can_translate(spec.model_copy(update={"languages": ("en",)})) is False


def test_dtype_per_device(tmp_path: Path) -> None:
    spec = ModelSpec(slug="pk", executor="parakeet", repo="t/pk")
    assert ParakeetEngine(spec, context(tmp_path, "pk")).pick_dtype() == "float32"
    half = ParakeetEngine(spec.model_copy(update={"compute_type": "float16"}), context(tmp_path, "pk"))
    install_nemo("tdt", tmp_path, "pk")
    with pytest.raises(ModelLoadError, match="needs CUDA"):
        half.load()
    odd = ParakeetEngine(spec.model_copy(update={"compute_type": "int8"}), context(tmp_path, "pk"))
    with pytest.raises(ModelLoadError, match="float32, float16, bfloat16"):
        odd.pick_dtype()
