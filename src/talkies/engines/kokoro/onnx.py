"""`kokoro_nvidia` executor: Kokoro-82M as ONNX on onnxruntime, G2P by phonemizer + espeak-ng. No torch.

Expected snapshot (nvidia/kokoro-82M-onnx-opt, flat under $TALKIES_DATA_DIR/models/<slug>/; see
docs/kokoro.md for the sources and what could not be confirmed)::

    kokoro-82m-v1.0.onnx   the graph: inputs tokens|input_ids [1, T] int64, style [1, 256], speed [1]
    voices.bin             raw float32 style packs, N x 510 x 256, in voices.txt order
    voices.txt             "<index>=<name>" per line
    tokens.txt             "<phoneme> <id>" per line (the Kokoro vocabulary)

Files are found by pattern, so other Kokoro ONNX layouts load too, among them the kokoro-onnx release
files exactly as downloaded (`kokoro-v1.0.onnx` or `kokoro-v1.0.int8.onnx` + `voices-v1.0.bin`, nothing
else): any `*.onnx` (the registry's `compute_type: int8` picks a `*.int8.onnx`, otherwise a full-precision
graph is preferred: the NVIDIA name, `kokoro-v1.0.onnx`, `model.onnx`, then the first), voices from
voices.bin+voices.txt, a kokoro-onnx `voices*.npz`/`.bin` archive, or per-voice `voices/<name>.bin|.npy`;
vocabulary from tokens.txt, config.json's `vocab`, vocab.json or tokenizer.json, else Kokoro v1.0's own
(`vocab.py`: the release files carry none). Every voice the voice file holds is listed, not only the
catalog's names (`KokoroBase.speaks_pack_voices`). Input names and dtypes are read from the graph.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from talkies.engines.kokoro.base import KokoroBase
from talkies.engines.kokoro.vocab import KOKORO_V1_VOCAB
from talkies.engines.kokoro.voices import KokoroLanguage
from talkies.engines.snapshot import ensure_snapshot
from talkies.errors import EngineUnavailableError

if TYPE_CHECKING:
    from talkies.engines.base import EngineContext
    from talkies.registry import ModelSpec

log = logging.getLogger(__name__)

PREFERRED_ONNX = ("kokoro-82m-v1.0.onnx", "kokoro-v1.0.onnx", "kokoro-v1.0.int8.onnx", "model.onnx")
STYLE_ROWS, STYLE_DIM = 510, 256
MAX_TOKENS = STYLE_ROWS - 2  # plus the two pad tokens around every sequence
_PUNCTUATION = ".!?;:,"


class KokoroOnnxEngine(KokoroBase):
    required_files = ("*.onnx",)  # what `talkies pull --check` asks of a snapshot laid out by hand

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        super().__init__(spec, context)
        self._session: Any = None
        self._inputs: dict[str, tuple[str, Any]] = {}
        self._vocab: dict[str, int] = {}
        self._voices: VoiceStore | None = None
        self._g2p: dict[str, Any] = {}

    # -- catalog (no heavy imports) ----------------------------------------------------------------
    speaks_pack_voices = True  # every voice of the voice file is listed (KokoroBase.voice_names)

    def _present_voices(self) -> list[str] | None:
        model_dir = self.context.model_dir
        if not model_dir.is_dir():
            return None
        return sorted(VoiceStore.names_in(model_dir))

    def _g2p_languages(self) -> set[str]:
        if importlib.util.find_spec("phonemizer") is None:
            return set()
        return {"a", "b", "e", "f", "h", "i", "p"}

    # -- lifecycle ---------------------------------------------------------------------------------
    def load(self) -> None:
        model_dir = ensure_snapshot(self.spec.slug, self.spec.repo, self.context.model_dir)
        graph = find_onnx(model_dir, self.spec.compute_type)
        self._vocab = read_vocab(model_dir)
        self._voices = VoiceStore.open(model_dir)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.context.cpu_threads > 0:
            options.intra_op_num_threads = self.context.cpu_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(graph), sess_options=options, providers=self._providers(ort))
        self._inputs = _input_names(self._session)
        _configure_espeak()
        self._loaded = True
        log.info(
            "kokoro_nvidia %s loaded %s on %s", self.spec.slug, graph.name, self._session.get_providers()
        )

    def _providers(self, ort: Any) -> list[Any]:
        available = ort.get_available_providers()
        device = self.context.device
        if device.startswith("cuda") and "CUDAExecutionProvider" in available:
            index = int(device.partition(":")[2] or 0)
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def unload(self) -> None:
        self._loaded = False
        self._session = None
        self._voices = None
        self._styles = {}
        self._g2p = {}
        gc.collect()

    # -- synthesis ---------------------------------------------------------------------------------
    def _read_style(self, name: str) -> Any:
        assert self._voices is not None
        return self._voices.style(name)

    def _synthesize_chunk(
        self, text: str, language: KokoroLanguage, style: Any, speed: float
    ) -> Iterator[Any]:
        phonemes = "".join(ch for ch in self._phonemize(text, language.espeak) if ch in self._vocab).strip()
        for batch in split_phonemes(phonemes, MAX_TOKENS):
            tokens = [self._vocab[ch] for ch in batch]
            if tokens:
                yield self._run(tokens, style, speed)

    def _run(self, tokens: list[int], style: Any, speed: float) -> npt.NDArray[np.float32]:
        (ids_name, ids_type), (style_name, style_type), (speed_name, speed_type) = (
            self._inputs["tokens"], self._inputs["style"], self._inputs["speed"]
        )  # fmt: skip
        row = np.asarray(style[len(tokens) - 1], dtype=np.float32).reshape(1, STYLE_DIM)
        feed = {
            ids_name: np.asarray([[0, *tokens, 0]], dtype=ids_type),
            style_name: row.astype(style_type),
            speed_name: np.asarray([speed], dtype=speed_type),
        }
        audio = self._session.run(None, feed)[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)

    def _phonemize(self, text: str, espeak_language: str) -> str:
        backend = self._g2p.get(espeak_language)
        if backend is None:
            from phonemizer.backend import EspeakBackend

            backend = EspeakBackend(espeak_language, preserve_punctuation=True, with_stress=True)
            self._g2p[espeak_language] = backend
        result: list[str] = backend.phonemize([text])
        return result[0] if result else ""


def _configure_espeak() -> None:
    """Use the espeak-ng that the espeakng-loader wheel bundles when there is one, else the system's."""
    if importlib.util.find_spec("espeakng_loader") is None:
        return
    import espeakng_loader
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    EspeakWrapper.set_library(espeakng_loader.get_library_path())
    EspeakWrapper.set_data_path(espeakng_loader.get_data_path())


def _input_names(session: Any) -> dict[str, tuple[str, Any]]:
    """Map the graph's inputs to roles; the token ids are `tokens` in some exports, `input_ids` in others."""
    dtypes = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
              "tensor(float16)": np.float16}  # fmt: skip
    found = {i.name: dtypes.get(i.type, np.float32) for i in session.get_inputs()}
    roles: dict[str, tuple[str, Any]] = {}
    for role, names in (
        ("tokens", ("tokens", "input_ids")),
        ("style", ("style", "ref_s")),
        ("speed", ("speed",)),
    ):
        name = next((n for n in names if n in found), None)
        if name is None:
            raise EngineUnavailableError(f"ONNX graph has no {role!r} input (inputs: {', '.join(found)})")
        roles[role] = (name, found[name])
    return roles


def split_phonemes(phonemes: str, limit: int) -> list[str]:
    """Cut a phoneme string longer than `limit` after punctuation, else at spaces, else anywhere."""
    out: list[str] = []
    rest = phonemes
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind(p) for p in _PUNCTUATION) + 1 or window.rfind(" ") + 1 or limit
        out.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        out.append(rest)
    return [b for b in out if b]


def find_onnx(model_dir: Path, compute_type: str | None = None) -> Path:
    """The graph to run: a `*.int8.onnx` when `compute_type` is int8 (and there is one), else a full one."""
    graphs = sorted(model_dir.rglob("*.onnx"))
    if not graphs:
        raise EngineUnavailableError(
            f"no .onnx graph in {model_dir} (expected kokoro-82m-v1.0.onnx, kokoro-v1.0.onnx or "
            "kokoro-v1.0.int8.onnx)"
        )
    quantized = [g for g in graphs if g.name.endswith(".int8.onnx")]
    full = [g for g in graphs if g not in quantized]
    candidates = (quantized or full) if compute_type == "int8" else (full or quantized)
    for name in PREFERRED_ONNX:
        for graph in candidates:
            if graph.name == name:
                return graph
    return candidates[0]


def read_vocab(model_dir: Path) -> dict[str, int]:
    tokens = model_dir / "tokens.txt"
    if tokens.is_file():
        vocab: dict[str, int] = {}
        for line in tokens.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            symbol, _, index = line.rpartition(" ")
            vocab[symbol or line[:1]] = int(index)  # the space phoneme's line is "  16"
        return vocab
    for name, path in (
        ("config.json", ("vocab",)), ("vocab.json", ("vocab",)), ("vocab.json", ()),
        ("tokenizer.json", ("model", "vocab")),
    ):  # fmt: skip
        file = model_dir / name
        if file.is_file():
            data: Any = json.loads(file.read_text(encoding="utf-8"))
            for key in path:
                data = data.get(key, {}) if isinstance(data, dict) else {}
            if isinstance(data, dict) and data and all(isinstance(v, int) for v in data.values()):
                return {str(k): int(v) for k, v in data.items()}
    log.info("no vocabulary in %s: using Kokoro v1.0's own (kokoro-onnx release layout)", model_dir)
    return dict(KOKORO_V1_VOCAB)


class VoiceStore:
    """Style packs [510, 256] by voice name, from whichever voice layout the snapshot has."""

    def __init__(self, packs: dict[str, Any]) -> None:
        self._packs = packs

    def style(self, name: str) -> npt.NDArray[np.float32]:
        pack = self._packs[name]
        if isinstance(pack, Path):
            pack = np.load(pack) if pack.suffix == ".npy" else np.fromfile(pack, dtype=np.float32)
        return np.asarray(pack, dtype=np.float32).reshape(STYLE_ROWS, STYLE_DIM)

    @staticmethod
    def names_in(model_dir: Path) -> list[str]:
        index = model_dir / "voices.txt"
        if index.is_file():
            return list(_read_index(index))
        archive = _archive(model_dir)
        if archive is not None:
            with zipfile.ZipFile(archive) as z:
                return [n.removesuffix(".npy") for n in z.namelist()]
        return [p.stem for p in _voice_files(model_dir)]

    @classmethod
    def open(cls, model_dir: Path) -> VoiceStore:
        index, raw = model_dir / "voices.txt", model_dir / "voices.bin"
        if index.is_file() and raw.is_file():
            names = _read_index(index)
            data = np.memmap(raw, dtype=np.float32, mode="r")
            rows = STYLE_ROWS * STYLE_DIM
            if data.size != (max(names.values()) + 1) * rows:
                raise EngineUnavailableError(
                    f"{raw}: {data.size} floats, expected {len(names)} voices x {STYLE_ROWS} x {STYLE_DIM}"
                )
            return cls({name: data[i * rows : (i + 1) * rows] for name, i in names.items()})
        archive = _archive(model_dir)
        if archive is not None:
            with np.load(archive) as packs:
                return cls({name: packs[name] for name in packs.files})
        files = _voice_files(model_dir)
        if files:
            return cls({p.stem: p for p in files})
        raise EngineUnavailableError(f"no Kokoro voices in {model_dir} (voices.bin + voices.txt expected)")


def _read_index(path: Path) -> dict[str, int]:
    names: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        index, sep, name = line.strip().partition("=")
        if sep and name.strip():
            names[name.strip()] = int(index)
    return names


def _archive(model_dir: Path) -> Path | None:
    """kokoro-onnx's voices file: an .npz (sometimes named voices-v1.0.bin)."""
    for path in sorted(model_dir.glob("voices*.npz")) + sorted(model_dir.glob("voices*.bin")):
        if zipfile.is_zipfile(path):
            return path
    return None


def _voice_files(model_dir: Path) -> list[Path]:
    folder = model_dir / "voices"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".npy"))
