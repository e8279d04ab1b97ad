"""Both Kokoro executors on the random-weight Kokoro-82M built by tests/fixtures/kokoro.py.

Random weights make noise, not speech, but the duration head is fixed (3 frames = 75 ms per phoneme at
speed 1), so clip lengths are deterministic and follow text length and speed as with the real model.
The whole module runs with the network cut off and spaCy's download refused.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from talkies.engines.base import TTS_SAMPLE_RATE, EngineContext, SpeechRequest, Synthesizer
from talkies.engines.kokoro.base import KokoroBase
from talkies.engines.kokoro.voices import CATALOG, parse_voice
from talkies.errors import UnknownVoiceError
from talkies.registry import ModelSpec
from tests.fixtures.kokoro import install_kokoro, install_kokoro_onnx

pytestmark = pytest.mark.slow

EXECUTORS = {
    "kokoro": (
        "kokoro-82m",
        "hexgrad/Kokoro-82M",
        install_kokoro,
        "talkies.engines.kokoro.pytorch:KokoroEngine",
    ),
    "kokoro_nvidia": (
        "kokoro-82m-nvidia",
        "nvidia/kokoro-82M-onnx-opt",
        install_kokoro_onnx,
        "talkies.engines.kokoro.onnx:KokoroOnnxEngine",
    ),
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module")
def offline() -> Iterator[_Records]:
    """No network for the whole module; spaCy downloads fail loudly; engine logs are captured."""
    import spacy

    records = _Records()
    logger = logging.getLogger("talkies.engines")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket, "create_connection", _refuse)
        mp.setattr(spacy.cli, "download", _refuse)
        logger.addHandler(records)
        try:
            yield records
        finally:
            logger.removeHandler(records)


def make_engine(executor: str, data_dir: Path, **spec_fields: object) -> KokoroBase:
    from talkies.engines import engine_class

    slug, repo, _, _ = EXECUTORS[executor]
    spec = ModelSpec(slug=slug, executor=executor, repo=repo, **spec_fields)  # type: ignore[arg-type]
    context = EngineContext(
        slug=slug, model_dir=data_dir / "models" / slug, device="cpu", cpu_threads=1
    )  # 2 threads on a busy 2-core box crawl
    engine = engine_class(executor)(spec, context)  # type: ignore[call-arg]
    assert isinstance(engine, KokoroBase)
    return engine


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kokoro-data")
    for _, _, install, _ in EXECUTORS.values():
        install(root)
    return root


@pytest.fixture(scope="module", params=list(EXECUTORS))
def engine(request: pytest.FixtureRequest, data_dir: Path, offline: _Records) -> Iterator[KokoroBase]:
    executor = request.param
    start = len(offline.records)
    engine = make_engine(executor, data_dir)
    engine.load()
    engine.load_records = offline.records[start:]  # type: ignore[attr-defined]
    yield engine
    engine.unload()


def speak(engine: KokoroBase, text: str, voice: str = "af_heart", speed: float = 1.0) -> np.ndarray:
    chunks = list(engine.synthesize(SpeechRequest(text=text, voice=voice, speed=speed)))
    assert chunks, "no audio"
    for chunk in chunks:
        assert chunk.sample_rate == TTS_SAMPLE_RATE
        assert chunk.pcm.dtype == np.float32
    return np.concatenate([c.pcm for c in chunks])


def test_is_a_synthesizer_that_speaks(engine: KokoroBase) -> None:
    assert isinstance(engine, Synthesizer)
    pcm = speak(engine, "Hello world.")
    assert 0.5 < pcm.size / TTS_SAMPLE_RATE < 3.0
    assert np.all(np.isfinite(pcm))
    assert np.max(np.abs(pcm)) <= 1.0
    assert float(np.sqrt(np.mean(pcm**2))) > 1e-4  # not silence


def test_duration_scales_with_text_and_speed(engine: KokoroBase) -> None:
    short = speak(engine, "Hi.").size
    long = speak(engine, "Hi there, how are you today?").size
    fast = speak(engine, "Hi there, how are you today?", speed=2.0).size
    assert long > 2 * short
    assert 0.55 < fast / long < 0.8  # 3 frames per phoneme -> round(1.5) = 2 frames at speed 2


def test_catalog_and_default_voice(engine: KokoroBase, data_dir: Path) -> None:
    voices = engine.voices()
    names = [v.name for v in voices]
    # the 41 contract voices; the snapshot's jf_/zf_ voices (no ja/zh G2P) only on the ONNX executor, which
    # lists every voice its voice file holds and speaks those with the request's language or English
    extra = ["jf_alpha", "zf_xiaobei"] if engine.spec.executor == "kokoro_nvidia" else []
    assert names == [*CATALOG, *extra]
    assert [v.name for v in voices if v.default] == ["af_heart"]
    plain = speak(engine, "Hi.", voice="af_heart").size
    assert speak(engine, "Hi.", voice="").size == plain
    ignored = engine.synthesize(
        SpeechRequest(text="Hi.", voice="af_heart", instructions="Shout!", language="fr")
    )
    assert sum(c.pcm.size for c in ignored) == plain  # instructions and language are accepted and ignored

    other = make_engine(engine.spec.executor, data_dir, default_voice="bm_george")
    assert [v.name for v in other.voices() if v.default] == ["bm_george"]  # works before load()


def test_unknown_voice_is_refused_before_any_audio(engine: KokoroBase) -> None:
    pack_only = () if engine.spec.executor == "kokoro_nvidia" else ("jf_alpha",)
    for voice in ("alloy", "jf_nobody", "af_heart+shimmer", *pack_only):
        with pytest.raises(UnknownVoiceError) as info:
            engine.synthesize(SpeechRequest(text="Hi.", voice=voice))  # raises on the call, not on iteration
        assert "af_heart" in info.value.message
        assert "pm_santa" in info.value.message


def test_blends_mix_style_vectors(engine: KokoroBase) -> None:
    names = engine.voice_names()
    bella, sky = (np.asarray(engine._read_style(n), dtype=np.float32) for n in ("af_bella", "af_sky"))
    equal = np.asarray(engine._style(parse_voice("af_bella+af_sky", names)), dtype=np.float32)
    weighted = np.asarray(engine._style(parse_voice("af_bella(2)+af_sky(1)", names)), dtype=np.float32)
    np.testing.assert_allclose(equal, (bella + sky) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weighted, bella * 2 / 3 + sky / 3, rtol=1e-5, atol=1e-6)
    assert speak(engine, "Hi.", voice="af_bella+af_sky").size > 0
    assert speak(engine, "Hi.", voice="af_bella(2)+af_sky(1)").size > 0
    with pytest.raises(UnknownVoiceError, match="bad weight 'abc'"):
        engine.synthesize(SpeechRequest(text="Hi.", voice="af_bella(abc)+af_sky"))


def test_other_languages(engine: KokoroBase) -> None:
    assert speak(engine, "Hola.", voice="ef_dora").size > 0
    assert (
        speak(engine, "Hi.", voice="ef_dora+af_heart").size > 0
    )  # a blend speaks its first voice's language


def test_multi_sentence_input_streams_chunks_joined_into_one_clip(
    engine: KokoroBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentences = ["One.", "Two.", "Three."]
    alone = [speak(engine, s).size for s in sentences]

    calls: list[str] = []
    real = engine._synthesize_chunk

    def counting(text: str, *args: object) -> Iterator[object]:
        calls.append(text)
        return real(text, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_synthesize_chunk", counting)
    stream = engine.synthesize(SpeechRequest(text=" ".join(sentences), voice="af_heart"))
    first = next(stream)
    assert calls == ["One."]  # the first chunk comes out before the rest is synthesized
    rest = list(stream)
    assert calls == sentences
    assert len(rest) + 1 >= len(sentences)
    clip = np.concatenate([first.pcm, *[c.pcm for c in rest]])
    overlap = round(0.010 * TTS_SAMPLE_RATE)
    assert clip.size == sum(alone) - overlap * (len(sentences) - 1)  # crossfaded seams, nothing dropped


def test_offline_load_no_download_and_one_warning(engine: KokoroBase) -> None:
    warnings = [r for r in engine.load_records if r.levelno == logging.WARNING]  # type: ignore[attr-defined]
    if engine.spec.executor == "kokoro":
        import spacy

        assert not spacy.util.is_package("en_core_web_sm")  # the fallback really was needed
        assert len(warnings) == 1
        assert "en_core_web_sm" in warnings[0].getMessage()
        assert spacy.load.__module__.startswith("spacy")  # patches removed after load
    else:
        assert warnings == []
