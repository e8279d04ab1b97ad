"""The `parakeet_cpp` executor: NeMo Parakeet-family checkpoints exported to ONNX, run by `onnx-asr` on
onnxruntime. No PyTorch and no NeMo are imported on this path.

`$TALKIES_DATA_DIR/models/<slug>/` holds an export in the onnx-asr layout (as NeMo's `model.export()`
writes it, e.g. `istupakov/parakeet-tdt-0.6b-v2-onnx`)::

    config.json               {"model_type": "nemo-conformer-tdt" | "-rnnt" | "-ctc",
                               "features_size": 80 | 128, "subsampling_factor": 8}
    vocab.txt                 "<token> <id>" per line, "<blk>" last
    encoder-model.onnx        (+ encoder-model.onnx.data)       TDT / RNNT
    decoder_joint-model.onnx
    model.onnx                                                  CTC

A registry `compute_type` (e.g. `int8`) selects the quantized files (`encoder-model.int8.onnx`, ...):
`talkies download` fetches only those, the way the contract's `gguf_file` picks one GGUF quant.

Transcription: the clip, or each VAD region of a long file (the first region alone, then batches of
`batch_size`; segments are streamed as each batch closes them), goes through the encoder and a greedy
transducer / CTC decode with token timestamps; `timeline.py` makes words (absolute times), drops language
tags and names the detected language; `common.group_words` makes Whisper-shape segments at 0.5 s pauses.
`language=` is checked against the model's languages and, on a checkpoint whose vocabulary has language
tags, pins the decode: every other language's tag is masked out of the decoder's output, so the model can
only close on the pinned language. Translation is refused.

Cross-request batching (docs/batching.md): with a batcher (the default), the unit is a clip (a VAD region
or the whole file); clips of concurrent requests with the same pinned language share one `recognize`
call, up to `max_batch_size` (first clip alone still comes first, so a stream's first text is early).

Engine options (`EngineContext.options`): `batch_size` (regions per encoder batch when batching is off,
default 8), `batching` (TALKIES_BATCHING).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from talkies.engines.base import (
    ASR_SAMPLE_RATE,
    EngineContext,
    Region,
    Segment,
    TranscriptionRequest,
    TranscriptionResult,
    Word,
    checkpoint,
    drain,
)
from talkies.engines.batch_host import BatchHost
from talkies.engines.common import SEGMENT_GAP_S, SnapshotEngine, group_words
from talkies.engines.parakeet_cpp.timeline import Decoded, language_tags, words_and_language
from talkies.errors import CapabilityError, ModelLoadError, UnsupportedLanguageError

if TYPE_CHECKING:
    from talkies.registry.schema import ModelSpec

log = logging.getLogger(__name__)

MODEL_TYPES = ("nemo-conformer-tdt", "nemo-conformer-rnnt", "nemo-conformer-ctc")
WINDOW_STEP = 0.01  # NeMo's mel hop: 10 ms
MIN_CLIP_SECONDS = 0.1  # shorter than one encoder frame or two: nothing to decode
_Clip = tuple[float, np.ndarray[Any, Any]]  # a region's start (s) and its samples


def snapshot_patterns(compute_type: str | None) -> tuple[str, ...]:
    """The files of an onnx-asr export for one quantization (None: the full-precision files)."""
    suffix = f".{compute_type}" if compute_type else ""
    return ("config.json", "vocab.txt", f"*model{suffix}.onnx", f"*model{suffix}.onnx?data")


class ParakeetCppEngine(SnapshotEngine, BatchHost):
    """Transcriber for Parakeet TDT / RNNT / CTC ONNX exports (see the module docstring)."""

    can_translate = False
    batches_regions = True
    required_files = ("config.json", "vocab.txt")

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        super().__init__(spec, context)
        self.snapshot_patterns = snapshot_patterns(spec.compute_type)
        self.languages: tuple[str, ...] = tuple(code.lower() for code in spec.languages)
        batch_size = context.options.get("batch_size", 8)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ModelLoadError(
                f"parakeet_cpp option 'batch_size' must be a positive integer, got {batch_size!r}"
            )
        self._batch_size = batch_size
        self._tags: dict[int, str] = {}
        self._frame = WINDOW_STEP * 8
        self._pin = threading.local()  # token ids masked out of the decode, per calling thread
        self.init_batching(spec, context)

    @classmethod
    def patterns_for(cls, spec: ModelSpec) -> tuple[str, ...]:
        """What `talkies download` fetches for `spec` (no engine needed)."""
        return snapshot_patterns(spec.compute_type)

    # --- lifecycle -----------------------------------------------------------------------------------

    def _load(self, model_dir: Path) -> Any:
        config = _read_config(model_dir)
        model_type = config.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ModelLoadError(
                f"model {self.spec.slug!r}: config.json in {model_dir} has model_type {model_type!r}; "
                f"the parakeet_cpp executor runs {', '.join(MODEL_TYPES)} (NeMo Parakeet-family ONNX exports)"
            )
        vocab = _read_vocab(model_dir / "vocab.txt")
        import onnx_asr
        import onnxruntime as ort
        from onnx_asr.utils import ModelLoadingError

        options = ort.SessionOptions()
        if self.context.cpu_threads:
            options.intra_op_num_threads = self.context.cpu_threads
        options.inter_op_num_threads = 1
        try:
            model = onnx_asr.load_model(
                model_type,
                model_dir,
                quantization=self.spec.compute_type,
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
        except (OSError, ValueError, RuntimeError, ModelLoadingError) as exc:
            raise ModelLoadError(f"model {self.spec.slug!r} failed to load from {model_dir}: {exc}") from exc
        self._tags = language_tags(vocab)
        if not self.languages and self._tags:
            self.languages = tuple(sorted(set(self._tags.values())))
        self._frame = WINDOW_STEP * int(config.get("subsampling_factor", 8))
        self._install_pin_hook(model.asr, model_type)

        log.info(
            "%s loaded: %s, %d tokens, %d language tags, quantization %s",
            self.spec.slug, model_type, len(vocab), len(self._tags), self.spec.compute_type or "none",
        )  # fmt: skip
        return model.with_timestamps()

    def _loaded(self, model: Any) -> None:
        self.start_batcher(self.spec.slug, lambda language, pcms: self._recognize(model, language, pcms))

    def unload(self) -> None:
        self.stop_batcher()
        super().unload()

    def _unloaded(self) -> None:
        self._tags = {}

    def _recognize(self, model: Any, language: str | None, pcms: list[Any]) -> list[Any]:
        """One `recognize` call for clips decoded with `language` pinned (None: free)."""
        with self._pinned(language):
            return list(model.recognize(pcms, sample_rate=ASR_SAMPLE_RATE))

    def _install_pin_hook(self, asr: Any, model_type: str) -> None:
        """Mask the pinned-out language tags in what the decoder sees (per thread, so calls may overlap)."""
        pin = self._pin

        def masked(scores: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            ids = getattr(pin, "ids", None)
            if ids is None:
                return scores
            scores = np.array(scores, copy=True)
            scores[..., ids] = -np.inf
            return scores

        if model_type == "nemo-conformer-ctc":
            encode: Callable[..., Any] = asr._encode

            def pinned_encode(features: Any, lengths: Any) -> Any:
                logprobs, out_lengths = encode(features, lengths)
                return masked(logprobs), out_lengths

            asr._encode = pinned_encode
        else:
            decode: Callable[..., Any] = asr._decode

            def pinned_decode(prev_tokens: Any, prev_state: Any, encoder_out: Any) -> Any:
                logits, step, state = decode(prev_tokens, prev_state, encoder_out)
                return masked(logits), step, state

            asr._decode = pinned_decode

    @contextmanager
    def _pinned(self, language: str | None) -> Iterator[None]:
        ids = [token for token, code in self._tags.items() if code != language] if language else []
        self._pin.ids = np.asarray(ids, dtype=np.int64) if ids else None
        try:
            yield
        finally:
            self._pin.ids = None

    # --- transcription -------------------------------------------------------------------------------

    def validate_language(self, code: str | None) -> str | None:
        """Normalize `code` ("DE" / "de-DE" -> "de"; "auto"/"" -> None) or raise UnsupportedLanguageError."""
        if code is None:
            return None
        normalized = code.strip().lower().replace("_", "-").split("-", 1)[0]
        if normalized in ("", "auto"):
            return None
        if self.languages and normalized not in self.languages:
            raise UnsupportedLanguageError(
                f"language {code!r} is not supported by model {self.spec.slug!r}; "
                f"valid codes: {', '.join(self.languages)} (or omit it / send 'auto' to detect)",
                param="language",
            )
        return normalized

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        return drain(self.transcribe_stream(request))

    def transcribe_stream(
        self, request: TranscriptionRequest
    ) -> Generator[Segment, None, TranscriptionResult]:
        """Segments as the batches of regions are decoded (engines.base.SegmentStreamer): after each batch,
        every segment that no later word can join (a later word follows it, or the next region starts a
        pause after it) is yielded; the rest at the end. The first batch is a single region, so a long
        file's first text comes after one region, not `batch_size`."""
        if request.task == "translate":
            raise CapabilityError(f"model {self.spec.slug!r} cannot translate", param="model")
        model = self.require_model()
        language = self.validate_language(request.language or self.spec.default_source_lang)
        audio = np.ascontiguousarray(request.audio, dtype=np.float32)
        duration = len(audio) / ASR_SAMPLE_RATE
        regions = request.regions if request.regions is not None else (Region(0.0, duration),)
        clips = [
            (r.start, audio[int(r.start * ASR_SAMPLE_RATE) : int(r.end * ASR_SAMPLE_RATE)]) for r in regions
        ]
        clips = [(start, pcm) for start, pcm in clips if len(pcm) >= MIN_CLIP_SECONDS * ASR_SAMPLE_RATE]
        words: list[Word] = []
        detected: str | None = None
        said = 0  # segments yielded so far
        decoded_clips = 0
        for batch, results in self._decoded(model, language, clips):
            for (start, pcm), result in zip(batch, results, strict=True):
                decoded = Decoded(result.tokens or (), result.timestamps or (), result.logprobs)
                clip_words, clip_language = words_and_language(decoded, frame=self._frame, offset=start)
                words += _inside(clip_words, start, start + len(pcm) / ASR_SAMPLE_RATE)
                detected = clip_language or detected
            decoded_clips += len(batch)
            closed = group_words(words)
            # The last segment is closed too when the next region starts a pause later (its words cannot
            # join it); otherwise it may go on in the next batch.
            next_start = clips[decoded_clips][0] if decoded_clips < len(clips) else None
            if closed and next_start is not None and next_start - closed[-1].end < SEGMENT_GAP_S:
                closed = closed[:-1]
            yield from closed[said:]
            said = max(said, len(closed))
            checkpoint()
        segments = group_words(words)
        yield from segments[said:]
        return TranscriptionResult(
            text="".join(segment.text for segment in segments),
            language=language or detected or _only(self.languages),
            duration=duration,
            segments=segments,
        )

    def _decoded(
        self, model: Any, language: str | None, clips: list[_Clip]
    ) -> Iterator[tuple[list[_Clip], list[Any]]]:
        """(clips, their results) as they are decoded: through the cross-request batcher one clip at a
        time (the first submitted alone, the rest once it is back), else in this request's own batches."""
        if self._batcher is None:
            for batch in _batches(clips, self._batch_size):
                # The pin is per thread, and each step of a stream may run on another one: pin per batch.
                yield batch, self._recognize(model, language, [pcm for _, pcm in batch])
            return
        for part in (clips[:1], clips[1:]):
            results = self.batched(language, [pcm for _, pcm in part])
            assert results is not None
            try:
                for clip, result in zip(part, results, strict=True):
                    yield [clip], [result]
            finally:
                results.close()


def _batches(clips: list[_Clip], size: int) -> Iterator[list[_Clip]]:
    """The first clip alone (early text when streaming), then batches of `size`."""
    if clips:
        yield clips[:1]
    for first in range(1, len(clips), size):
        yield clips[first : first + size]


def _inside(words: list[Word], start: float, end: float) -> list[Word]:
    """Words clamped into their clip [start, end] (the last word's one-frame end may overhang)."""
    for word in words:
        word.start = min(max(word.start, start), end)
        word.end = min(max(word.end, word.start), end)
    return words


def _only(languages: tuple[str, ...]) -> str | None:
    return languages[0] if len(languages) == 1 else None


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {model_dir / 'config.json'}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{model_dir / 'config.json'} is not a JSON object")
    return config


def _read_vocab(path: Path) -> dict[int, str]:
    """vocab.txt ("<token> <id>" per line; SentencePiece's "▁" read as a space) -> id -> token."""
    vocab = {}
    try:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            token, _, token_id = line.rpartition(" ")
            if not token_id.isdigit():
                raise ModelLoadError(f"{path}:{number}: expected '<token> <id>', got {line!r}")
            vocab[int(token_id)] = token.replace("\u2581", " ")
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    return vocab
