"""The ONNX executor's snapshot discovery, provider choice, and its torch-free hot path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from talkies.engines.base import EngineContext, SpeechRequest
from talkies.engines.kokoro.onnx import KokoroOnnxEngine, VoiceStore, find_onnx, read_vocab, split_phonemes
from talkies.engines.kokoro.voices import CATALOG
from talkies.registry import ModelSpec
from tests.fixtures.kokoro import SNAPSHOT_VOICES, build_kokoro_onnx

SPEC = ModelSpec(slug="kokoro-82m-nvidia", executor="kokoro_nvidia", repo="nvidia/kokoro-82M-onnx-opt")


def _engine(model_dir: Path, device: str = "cpu") -> KokoroOnnxEngine:
    return KokoroOnnxEngine(SPEC, EngineContext(slug=SPEC.slug, model_dir=model_dir, device=device))


@pytest.mark.slow
def test_no_torch_on_the_onnx_path(tmp_path: Path) -> None:
    snapshot = build_kokoro_onnx()
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from talkies.engines.base import EngineContext, SpeechRequest
        from talkies.engines.kokoro.onnx import KokoroOnnxEngine
        from talkies.registry import ModelSpec
        spec = ModelSpec(slug="k", executor="kokoro_nvidia", repo="nvidia/kokoro-82M-onnx-opt")
        engine = KokoroOnnxEngine(spec, EngineContext(slug="k", model_dir=Path({str(snapshot)!r}),
                                                      device="cpu", cpu_threads=1))
        engine.load()
        pcm = [c.pcm for c in engine.synthesize(SpeechRequest(text="Hi.", voice="af_sky(1)+bf_emma(1)"))]
        assert sum(p.size for p in pcm) > 0
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "kokoro", "misaki", "spacy"))
        print("HEAVY", heavy)
        """
    )
    src = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout


def test_voices_before_load_follow_the_snapshot(tmp_path: Path) -> None:
    assert len(_engine(tmp_path / "absent").voices()) == 41  # not downloaded yet: the whole catalog
    (tmp_path / "voices.txt").write_text("0=af_heart\n1=zm_yunxi\n2=pm_alex\n3=af_custom\n")
    voices = _engine(tmp_path).voices()
    # the catalog's names in its order, then whatever else the voice file holds (no Mandarin G2P here:
    # zm_yunxi speaks American English unless a request names a language)
    assert [v.name for v in voices] == ["af_heart", "pm_alex", "af_custom", "zm_yunxi"]
    assert {v.name: v.languages for v in voices}["zm_yunxi"] == ("en-us",)
    assert {v.name: v.languages for v in voices}["pm_alex"] == ("pt-br",)


def test_voice_layouts(tmp_path: Path) -> None:
    packs = {n: np.random.default_rng(i).standard_normal((510, 1, 256)).astype(np.float32)
             for i, n in enumerate(["af_heart", "bm_george"])}  # fmt: skip
    raw = tmp_path / "raw"
    raw.mkdir()
    np.stack(list(packs.values())).tofile(raw / "voices.bin")
    (raw / "voices.txt").write_text("0=af_heart\n1=bm_george\n")
    archive = tmp_path / "archive"  # kokoro-onnx: an npz, here under its release name
    archive.mkdir()
    np.savez(archive / "voices-v1.0.npz", **packs)
    (archive / "voices-v1.0.npz").rename(archive / "voices-v1.0.bin")
    per_voice = tmp_path / "per_voice"  # onnx-community: voices/<name>.bin
    (per_voice / "voices").mkdir(parents=True)
    for name, pack in packs.items():
        pack.tofile(per_voice / "voices" / f"{name}.bin")
    for folder in (raw, archive, per_voice):
        assert sorted(VoiceStore.names_in(folder)) == ["af_heart", "bm_george"]
        store = VoiceStore.open(folder)
        np.testing.assert_array_equal(store.style("bm_george"), packs["bm_george"].reshape(510, 256))


def test_vocab_from_tokens_txt_matches_the_real_config(tmp_path: Path) -> None:
    real = json.loads((resources.files("kokoro_onnx") / "config.json").read_text(encoding="utf-8"))["vocab"]
    assert read_vocab(build_kokoro_onnx()) == real  # includes the space phoneme's "  16" line
    (tmp_path / "config.json").write_text(json.dumps({"vocab": real}))
    assert read_vocab(tmp_path) == real


def test_fixture_matches_the_documented_nvidia_layout() -> None:
    snapshot = build_kokoro_onnx()
    names = {p.name for p in snapshot.iterdir() if not p.name.startswith(".")}
    assert names == {"kokoro-82m-v1.0.onnx", "voices.bin", "voices.txt", "tokens.txt"}
    assert (snapshot / "voices.bin").stat().st_size == len(SNAPSHOT_VOICES) * 510 * 256 * 4


def test_split_phonemes_respects_the_limit() -> None:
    text = "həlˈoʊ wˈɜːld, ðɪs ɪz ɐ tˈɛst. " * 40
    batches = split_phonemes(text.strip(), 100)
    assert all(0 < len(b) <= 100 for b in batches)
    assert "".join(batches).replace(" ", "") == text.replace(" ", "")
    assert split_phonemes("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]


class _FakeOrt:
    def __init__(self, providers: list[str]) -> None:
        self.providers = providers

    def get_available_providers(self) -> list[str]:
        return self.providers


def test_cuda_provider_when_available_and_asked_for(tmp_path: Path) -> None:
    both = _FakeOrt(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _engine(tmp_path, "cuda:1")._providers(both) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert _engine(tmp_path, "cpu")._providers(both) == ["CPUExecutionProvider"]
    assert _engine(tmp_path, "cuda")._providers(_FakeOrt(["CPUExecutionProvider"])) == [
        "CPUExecutionProvider"
    ]


def _release_layout(target: Path) -> Path:
    """The generated graph and voices laid out as the kokoro-onnx release files are downloaded: two graphs,
    an .npz voice archive named voices-v1.0.bin holding a voice outside the catalog, no vocabulary."""
    snapshot = build_kokoro_onnx()
    target.mkdir()
    for name in ("kokoro-v1.0.onnx", "kokoro-v1.0.int8.onnx"):
        (target / name).write_bytes((snapshot / "kokoro-82m-v1.0.onnx").read_bytes())
    store = VoiceStore.open(snapshot)
    packs = {name: store.style(name).reshape(510, 1, 256) for name in SNAPSHOT_VOICES}
    packs["jm_kumo"] = packs[SNAPSHOT_VOICES[0]]
    with (target / "voices-v1.0.bin").open("wb") as handle:
        np.savez(handle, **packs)
    return target


def test_release_layout_picks_the_graph_compute_type_asks_for(tmp_path: Path) -> None:
    release = _release_layout(tmp_path / "release")
    assert find_onnx(release).name == "kokoro-v1.0.onnx"
    assert find_onnx(release, "int8").name == "kokoro-v1.0.int8.onnx"
    (release / "kokoro-v1.0.onnx").unlink()
    assert find_onnx(release).name == "kokoro-v1.0.int8.onnx"  # the only one there is


def test_release_layout_needs_no_vocabulary_file(tmp_path: Path) -> None:
    real = json.loads((resources.files("kokoro_onnx") / "config.json").read_text(encoding="utf-8"))["vocab"]
    assert read_vocab(tmp_path) == real  # nothing on disk: Kokoro v1.0's own
    (tmp_path / "vocab.json").write_text(json.dumps({"vocab": {"a": 1}}))  # the wheel's spelling wins
    assert read_vocab(tmp_path) == {"a": 1}


@pytest.mark.slow
def test_release_layout_loads_as_is_and_speaks_its_own_voices(tmp_path: Path) -> None:
    release = _release_layout(tmp_path / "release")
    spec = SPEC.model_copy(update={"compute_type": "int8"})
    engine = KokoroOnnxEngine(
        spec, EngineContext(slug=SPEC.slug, model_dir=release, device="cpu", cpu_threads=1)
    )
    names = [v.name for v in engine.voices()]
    assert names == [*CATALOG, "jf_alpha", "jm_kumo", "zf_xiaobei"]  # the catalog, then the file's others
    engine.load()
    try:
        pcm = np.concatenate(
            [c.pcm for c in engine.synthesize(SpeechRequest(text="Hello there.", voice="jm_kumo"))]
        )
        assert pcm.size > 0
        assert np.isfinite(pcm).all()
        french = engine.synthesize(SpeechRequest(text="Bonjour.", voice="jm_kumo", language="fr"))
        assert sum(c.pcm.size for c in french) > 0
    finally:
        engine.unload()
