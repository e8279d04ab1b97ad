"""The `whisper` executor: faster-whisper (CTranslate2) on a CT2 model directory.

`$TALKIES_DATA_DIR/models/<slug>/` holds a flat copy of a CT2 Whisper repository (`model.bin`,
`config.json`, `tokenizer.json`, `vocabulary.*`, usually `preprocessor_config.json`), e.g.
`Systran/faster-whisper-large-v3`. Two decoding paths:

* sequential (`request.regions is None`): `WhisperModel.transcribe`, Whisper's own 30 s sliding window,
  with the temperature fallback and previous-text conditioning; with cross-request batching on, a file
  of one window that asks for one temperature takes the batched path instead, as one clip
  (`batchable_short_file`, docs/batching.md);
* batched (`request.regions` set, long files): the server's shared VAD regions are packed into clips
  of at most 30 s (neighbours closer than `max_region_gap` share a clip, silence between them included:
  the encoder always sees a 30 s window, so one clip per short utterance would pay for 30 s each) and
  become faster-whisper's `clip_timestamps` for `BatchedInferencePipeline`, which encodes and decodes
  `batch_size` clips at once. Its own VAD stays off; timestamps come back absolute (seconds from the
  start of the file), and Whisper's timestamp tokens split each clip into segments.

Engine options (`EngineContext.options`; the server fills `batch_size` from TALKIES_WHISPER_BATCH_SIZE):

    compute_type    CT2 compute type; default int8 on CPU, float16 on CUDA (the registry's
                    `compute_type` wins over both)
    batch_size      regions decoded together on the batched path (default 8)
    num_workers     CT2 workers, for concurrent requests on one model (default 1)
    max_region_gap  seconds of silence between two VAD regions that may share a clip (default 3.0;
                    0 decodes every region on its own)
    beam_size, best_of, patience, max_new_tokens, condition_on_previous_text, repetition_penalty,
    no_repeat_ngram_size, compression_ratio_threshold, log_prob_threshold, no_speech_threshold,
    hallucination_silence_threshold, without_timestamps
                    faster-whisper decoding knobs, passed through (tests bound decoding with
                    `max_new_tokens` and `beam_size`)
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
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
from talkies.engines.snapshot import ensure_snapshot
from talkies.engines.whisper.batched import (
    cross_request_pipeline,
    decode_windows,
)
from talkies.engines.whisper.options import ENGINE_OPTIONS, decode_options, positive_int
from talkies.engines.whisper.timeline import (
    DEFAULT_REGION_GAP,
    MAX_CLIP_SECONDS,
    MIN_CLIP_SECONDS,
    clamp_next,
    clamp_segment,
    clip_seek,
    clip_timestamps,
)
from talkies.errors import CapabilityError, EngineError, ModelLoadError, UnsupportedLanguageError
from talkies.registry.schema import EXECUTORS

if TYPE_CHECKING:
    from talkies.registry import ModelSpec

log = logging.getLogger(__name__)

# Whisper's language tokens, in token order: a 99-language model (v1/v2) knows the first 99,
# large-v3 adds "yue". English-only models (*.en) know "en" only.
WHISPER_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id",
    "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg",
    "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br",
    "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so",
    "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt",
    "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)  # fmt: skip

MULTILINGUAL_VOCABULARY = 51865
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
SNAPSHOT_PATTERNS = EXECUTORS[
    "whisper"
].snapshot_patterns  # one list: the schema's, which `talkies pull` reads
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_MAX_LENGTH = 448  # Whisper's decoder positions
_PROMPT_RESERVE = 228  # previous-text prompt (<= 223 tokens) + sot_prev + sot, language, task, timestamps


@dataclass(frozen=True, slots=True)
class _Decoded:
    segments: Iterator[Segment]
    language: str | None


def available_cpu_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class WhisperEngine(BatchHost):
    """Transcriber on faster-whisper. Construction is cheap; `load()` imports faster_whisper."""

    batches_regions = True
    request_options = frozenset({"prompt", "temperature", "logprobs"})  # logprobs: word probabilities
    supported_languages = WHISPER_LANGUAGES  # the catalog's answer before load (Wyoming `describe`)
    can_translate = True  # the class's answer (multilingual); an instance knows for sure once loaded

    @staticmethod
    def snapshot_can_translate(model_dir: Path) -> bool | None:
        """Whether the snapshot in `model_dir` is multilingual, from its vocabulary size; None: no snapshot.

        CTranslate2 itself decides `is_multilingual` by the vocabulary (51864 tokens: English-only *.en
        models; 51865+: multilingual), so this agrees with the loaded model without loading it.
        """
        vocabulary = model_dir / "vocabulary.json"
        try:
            if vocabulary.is_file():
                size = len(json.loads(vocabulary.read_text(encoding="utf-8")))
            elif (model_dir / "vocabulary.txt").is_file():
                size = len((model_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines())
            else:
                return None
        except (OSError, ValueError):
            return None
        return size >= MULTILINGUAL_VOCABULARY

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self._languages: tuple[str, ...] = WHISPER_LANGUAGES
        self._model: Any = None
        self._decode_options = decode_options(context.options)
        self._batch_size = positive_int(context.options, "batch_size", 8)
        self._num_workers = positive_int(context.options, "num_workers", 1)
        gap = context.options.get("max_region_gap", DEFAULT_REGION_GAP)
        if isinstance(gap, bool) or not isinstance(gap, int | float) or gap < 0:
            raise ModelLoadError(f"whisper option 'max_region_gap' must be seconds >= 0, got {gap!r}")
        self._max_region_gap = float(gap)
        self.init_batching(spec, context)
        unknown = set(context.options) - set(ENGINE_OPTIONS) - set(self._decode_options)
        if unknown:
            log.warning("%s: ignoring unknown whisper options %s", spec.slug, ", ".join(sorted(unknown)))

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> tuple[str, int]:
        """`context.device` as faster-whisper wants it: ("cuda", N) for "cuda:N"."""
        kind, _, index = self.context.device.partition(":")
        return kind, int(index) if index else 0

    @property
    def compute_type(self) -> str:
        explicit = self.spec.compute_type or self.context.options.get("compute_type")
        if explicit:
            return str(explicit)
        return "float16" if self.device[0] == "cuda" else "int8"

    @property
    def cpu_threads(self) -> int:
        return self.context.cpu_threads or available_cpu_cores()

    def load(self) -> None:
        if self._model is not None:
            return
        model_dir = ensure_snapshot(
            self.spec.slug, self.spec.repo, self.context.model_dir, allow_patterns=SNAPSHOT_PATTERNS
        )
        missing = missing_files(model_dir)
        if missing:
            raise ModelLoadError(
                f"model {self.spec.slug!r}: the snapshot in {model_dir} is incomplete, missing "
                f"{', '.join(missing)}; delete the directory to download it again, or copy there the "
                f"files of a CTranslate2 Whisper repository ({self.spec.repo or 'Systran/faster-whisper-*'})"
            )
        from faster_whisper import WhisperModel

        device, index = self.device
        try:
            model = WhisperModel(
                str(model_dir),
                device=device,
                device_index=index,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self._num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(f"model {self.spec.slug!r} failed to load from {model_dir}: {exc}") from exc
        self._model = model
        self.start_batcher(self.spec.slug, lambda key, windows: decode_windows(model, key, windows))
        self.can_translate = bool(model.model.is_multilingual)
        self._languages = _model_languages(model)
        log.info(
            "%s loaded on %s:%d (%s, %d threads, multilingual=%s)",
            self.spec.slug, device, index, self.compute_type, self.cpu_threads, self.can_translate,
        )  # fmt: skip

    def unload(self) -> None:
        self.stop_batcher()
        model, self._model = self._model, None
        if model is not None:
            # CT2 frees its weights when the last Python reference goes; nothing else holds one.
            del model
            gc.collect()

    # --- transcription -------------------------------------------------------------------------------

    @property
    def languages(self) -> tuple[str, ...]:
        """Language codes this model accepts (every Whisper code until loaded)."""
        return self._languages

    def validate_language(self, code: str | None) -> str | None:
        """Normalize `code` ("EN" -> "en", "auto"/"" -> None) or raise UnsupportedLanguageError."""
        if code is None:
            return None
        normalized = code.strip().lower()
        if normalized in ("", "auto"):
            return None
        if normalized not in self._languages:
            raise UnsupportedLanguageError(
                f"language {code!r} is not supported by model {self.spec.slug!r}; "
                f"valid codes: {', '.join(self._languages)}",
                param="language",
            )
        return normalized

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        return drain(self.transcribe_stream(request))

    def transcribe_stream(
        self, request: TranscriptionRequest
    ) -> Generator[Segment, None, TranscriptionResult]:
        """Segments as faster-whisper decodes them (its segment iterators are lazy), each clamped into a
        monotonic timeline inside the audio as it comes; returns the whole result (see SegmentStreamer)."""
        model = self._model
        if model is None:
            raise EngineError(f"model {self.spec.slug!r} is not loaded")
        language = self.validate_language(request.language or self.spec.default_source_lang)
        if request.task == "translate" and not self.can_translate:
            raise CapabilityError(f"model {self.spec.slug!r} is English-only and cannot translate")
        audio = np.ascontiguousarray(request.audio, dtype=np.float32)
        duration = len(audio) / ASR_SAMPLE_RATE
        kwargs = self._transcribe_kwargs(request, language)
        regions = request.regions
        if regions is None and self._batcher is not None and batchable_short_file(request, duration):
            regions = (Region(0.0, duration),)  # one window, decoded with concurrent requests' windows
        if regions is not None:
            decoded = self._transcribe_regions(model, audio, regions, kwargs)
        else:
            raw, info = model.transcribe(audio, vad_filter=False, **kwargs)
            decoded = _Decoded((_segment(s) for s in raw), info.language)
        segments: list[Segment] = []
        previous_end = 0.0
        for seg in decoded.segments:
            previous_end = clamp_next(seg, previous_end, duration)
            segments.append(seg)
            yield seg
            checkpoint()
        return TranscriptionResult(
            text="".join(s.text for s in segments),
            language=decoded.language,
            duration=duration,
            segments=segments,
        )

    def _transcribe_regions(
        self, model: Any, audio: np.ndarray[Any, Any], regions: tuple[Region, ...], kwargs: dict[str, Any]
    ) -> _Decoded:
        clips = clip_timestamps(regions, len(audio) / ASR_SAMPLE_RATE, self._max_region_gap)
        if not clips:  # no speech at all: nothing to decode, but say which language was asked
            language = kwargs.get("language") or (None if self.can_translate else "en")
            return _Decoded(iter(()), language)
        from faster_whisper import BatchedInferencePipeline

        # A pipeline per request: it keeps per-call state (last_speech_timestamp). With cross-request
        # batching its windows join those of concurrent requests (engines/whisper/batched.py).
        batcher = self._batcher
        pipeline = (
            BatchedInferencePipeline(model) if batcher is None else cross_request_pipeline(model, batcher)
        )
        batched = dict(kwargs)
        temperature = batched.pop("temperature")
        # The batched pipeline decodes each region once, at the first temperature of a fallback list.
        batched["temperature"] = temperature[0] if isinstance(temperature, tuple) else temperature
        for key in ("condition_on_previous_text", "hallucination_silence_threshold"):
            batched.pop(key, None)  # the batched pipeline ignores them
        # faster-whisper's batched default is one segment per clip; a packed clip holds several utterances
        batched.setdefault("without_timestamps", False)
        raw, info = pipeline.transcribe(
            audio, vad_filter=False, clip_timestamps=clips, batch_size=self._batch_size, **batched
        )
        return _Decoded(_clamped_to_clips(raw, clips), info.language)

    def _transcribe_kwargs(self, request: TranscriptionRequest, language: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(self._decode_options)
        kwargs.update(
            language=language,
            task=request.task,
            initial_prompt=request.prompt or None,
            word_timestamps=request.word_timestamps,
            temperature=DEFAULT_TEMPERATURES if request.temperature is None else float(request.temperature),
        )
        max_new = kwargs.get("max_new_tokens")
        if max_new is not None:
            # prompt + max_new_tokens must fit Whisper's 448 positions, or faster-whisper raises mid-file
            conditioned = bool(request.prompt) or kwargs.get("condition_on_previous_text", True)
            reserve = _PROMPT_RESERVE if conditioned else 5
            kwargs["max_new_tokens"] = min(int(max_new), _MAX_LENGTH - reserve)
        return kwargs


# --- helpers (pure) ----------------------------------------------------------------------------------


def _clamped_to_clips(raw: Iterable[Any], clips: list[dict[str, float]]) -> Iterator[Segment]:
    """Each segment carries its clip's start as `seek` (in 10 ms frames). Nothing decoded from a clip can
    lie outside it (the rest of its 30 s window is padding), so clamp there: word alignment on a confused
    model otherwise stretches segments into the padding."""
    by_seek = {clip_seek(clip["start"]): clip for clip in clips}
    for item in raw:
        seg = _segment(item)
        clip = by_seek.get(int(item.seek))
        if clip is not None:
            clamp_segment(seg, clip["start"], clip["end"])
        yield seg


def batchable_short_file(request: TranscriptionRequest, duration: float) -> bool:
    """Whether a file sent without VAD regions may join the cross-request batches as one clip: it fits one
    30 s window and asks for one temperature. Without a temperature the request gets Whisper's fallback
    (re-decoding a window at rising temperatures when its compression ratio or log-probability fails a
    threshold), which only the sequential path does, so it stays there (docs/batching.md)."""
    return request.temperature is not None and MIN_CLIP_SECONDS <= duration <= MAX_CLIP_SECONDS


def missing_files(model_dir: Path) -> list[str]:
    """Files a CT2 Whisper directory needs that `model_dir` lacks."""
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in ("vocabulary.json", "vocabulary.txt")):
        missing.append("vocabulary.json (or vocabulary.txt)")
    return missing


def _segment(raw: Any) -> Segment:
    """faster-whisper's Segment -> ours, with its confidence fields as plain floats."""
    return Segment(
        start=float(raw.start),
        end=float(raw.end),
        text=str(raw.text),
        words=[
            Word(word=str(w.word), start=float(w.start), end=float(w.end), probability=float(w.probability))
            for w in raw.words or ()
        ],
        avg_logprob=float(raw.avg_logprob),
        compression_ratio=float(raw.compression_ratio),
        no_speech_prob=float(raw.no_speech_prob),
        temperature=None if raw.temperature is None else float(raw.temperature),
    )


def _model_languages(model: Any) -> tuple[str, ...]:
    if not model.model.is_multilingual:
        return ("en",)
    tokenizer = model.hf_tokenizer
    return tuple(code for code in WHISPER_LANGUAGES if tokenizer.token_to_id(f"<|{code}|>") is not None)
