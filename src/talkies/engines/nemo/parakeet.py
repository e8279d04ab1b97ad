"""The `parakeet` executor: NeMo TDT, RNNT, CTC and hybrid RNNT/CTC checkpoints (Parakeet class).

NeMo's `transcribe(..., timestamps=True)` gives each hypothesis its word and segment timestamps (seconds
from the start of the clip it decoded); per-word confidence is turned on in the model's decoding config
at load (`confidence_cfg.preserve_word_confidence`), leaving every other decoding setting of the
checkpoint as it is. Parakeet has no language prompt: a pinned `language` is checked against the model's
languages and reported; a model that identifies the language (`hypothesis.langs`) reports its own.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable
from typing import Any

from talkies.engines.base import (
    ASR_SAMPLE_RATE,
    Region,
    Segment,
    TranscriptionRequest,
    TranscriptionResult,
    Word,
)
from talkies.engines.nemo.base import PCM, NemoEngine
from talkies.errors import CapabilityError

log = logging.getLogger(__name__)


class ParakeetEngine(NemoEngine):
    """Transcriber on a NeMo transducer / CTC checkpoint (see the module docstring)."""

    can_translate = False

    def _prepare(self, model: Any) -> None:
        from omegaconf import open_dict

        decoding = getattr(getattr(model, "cfg", None), "decoding", None)
        if decoding is None or not hasattr(model, "change_decoding_strategy"):
            return
        decoding = copy.deepcopy(decoding)
        with open_dict(decoding):
            confidence = decoding.get("confidence_cfg") or {}
            decoding.confidence_cfg = {
                **confidence,
                "preserve_word_confidence": True,
                "preserve_token_confidence": True,
                "preserve_frame_confidence": True,  # NeMo derives token/word confidence from frames
            }
        try:
            model.change_decoding_strategy(decoding, verbose=False)
        except Exception as exc:  # an exotic decoder: decode without confidence rather than not at all
            log.warning("%s: per-word confidence unavailable (%s)", self.spec.slug, exc)

    def decode_clips(self, key: Hashable, clips: list[PCM], batch_size: int) -> list[Any]:
        """Parakeet decodes every clip alike (no prompt): any clips share a call."""
        with self.running() as model:
            hypotheses = model.transcribe(
                clips, batch_size=batch_size, timestamps=True, return_hypotheses=True, verbose=False
            )
        if isinstance(hypotheses, tuple):  # (best, all) from some RNNT decoders
            hypotheses = hypotheses[0]
        return list(hypotheses)

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        if request.task == "translate":
            raise CapabilityError(f"model {self.spec.slug!r} transcribes only; it cannot translate")
        pinned = self.validate_language(request.language or self.spec.default_source_lang)
        duration = len(request.audio) / ASR_SAMPLE_RATE
        clips = self.cut_regions(request.audio, request.regions)
        if not clips:
            return TranscriptionResult(text="", language=pinned, duration=duration)
        hypotheses = self.decode("asr", [clip for _, clip in clips])
        segments: list[Segment] = []
        detected: str | None = None
        for (region, _), hypothesis in zip(clips, hypotheses, strict=True):
            segments.extend(_segments(hypothesis, region, duration))
            detected = detected or _language(hypothesis)
        return TranscriptionResult(
            text=" ".join(s.text for s in segments if s.text),
            language=pinned or detected or self.spec.default_source_lang or self.only_language,
            duration=duration,
            segments=segments,
        )


def _language(hypothesis: Any) -> str | None:
    langs = getattr(hypothesis, "langs", None)
    if isinstance(langs, str) and langs:
        return langs
    if isinstance(langs, list | tuple) and langs and isinstance(langs[0], str):
        return str(langs[0])
    return None


def _segments(hypothesis: Any, region: Region, duration: float) -> list[Segment]:
    """One hypothesis -> segments with absolute times, each with the words that fall inside it."""
    stamps = getattr(hypothesis, "timestamp", None) or {}
    words = _words(stamps.get("word") or [], getattr(hypothesis, "word_confidence", None), region, duration)
    raw_segments = stamps.get("segment") or []
    text = str(getattr(hypothesis, "text", "") or "").strip()
    if not raw_segments:
        if not text:
            return []
        start = words[0].start if words else region.start
        end = words[-1].end if words else min(region.end, duration)
        return [Segment(start=start, end=end, text=text, words=words)]
    segments = []
    remaining = list(words)
    for index, raw in enumerate(raw_segments):
        start, end = _absolute(raw, region, duration)
        last = index == len(raw_segments) - 1
        inside = [w for w in remaining if last or w.start < end]
        remaining = remaining[len(inside) :]
        seg_text = str(raw.get("segment", "")).strip()
        if inside:
            start, end = min(start, inside[0].start), max(end, inside[-1].end)
        segments.append(Segment(start=start, end=end, text=seg_text, words=inside))
    return segments


def _words(raw_words: list[dict[str, Any]], confidence: Any, region: Region, duration: float) -> list[Word]:
    scores = list(confidence) if confidence is not None else []
    if len(scores) != len(raw_words):
        scores = []
    words = []
    previous_end = region.start
    for index, raw in enumerate(raw_words):
        start, end = _absolute(raw, region, duration)
        start = max(start, previous_end)  # monotonic even where NeMo's token offsets overlap
        end = max(end, start)
        previous_end = end
        probability = _probability(scores[index]) if scores else None
        words.append(Word(word=str(raw.get("word", "")), start=start, end=end, probability=probability))
    return words


def _probability(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return min(1.0, max(0.0, score))


def _absolute(raw: dict[str, Any], region: Region, duration: float) -> tuple[float, float]:
    """A NeMo timestamp entry (seconds in its clip) -> seconds in the file, inside the region."""
    limit = min(region.end, duration)
    start = min(max(region.start + float(raw.get("start", 0.0)), region.start), limit)
    end = min(max(region.start + float(raw.get("end", 0.0)), start), limit)
    return round(start, 3), round(end, 3)
