"""CMU PocketSphinx speech recognition: weight-free, the US English model bundled in the pocketsphinx wheel.

Word timestamps come from the decoder's segmentation (`Decoder.seg()`, in frames at `frate` per second);
silences, sentence markers and fillers are dropped, and `engines.common.group_words` starts a new segment
at each pause of half a second or more so subtitles get one cue per phrase. A pocketsphinx Decoder is not
thread-safe: one per load, and calls are serialized with a lock (the registry also gives the model
max_concurrency 1).

Cepstral mean normalization: the decoder carries its CMN estimate from one utterance to the next, so a
request's words would depend on what earlier requests decoded. Each region is decoded twice from the same
initial estimate: the first pass only adapts the CMN to this audio, the second gives the words. Results
are then a function of the audio alone, and better on short clips (the README's "Hello from talkies."
round-trips only this way).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from talkies.engines.base import (
    ASR_SAMPLE_RATE,
    EngineContext,
    Region,
    TranscriptionRequest,
    TranscriptionResult,
    Word,
)
from talkies.engines.common import group_words
from talkies.errors import CapabilityError, EngineError, UnsupportedLanguageError

if TYPE_CHECKING:
    from talkies.registry import ModelSpec

LANGUAGE = "en"


def clean_word(token: str) -> str | None:
    """The dictionary word for a segmentation token, or None for silence / markers / fillers.

    `<s>`, `</s>`, `<sil>`, `[NOISE]`, `++UH++` are not words; `read(2)` is read's second pronunciation.
    """
    if not token or token[0] in "<[" or token.startswith("++"):
        return None
    word = token.split("(", 1)[0] if token.endswith(")") else token
    return word or None


class PocketsphinxEngine:
    supported_languages = ("en",)  # the US English model bundled in the wheel
    """The `pocketsphinx` executor (Transcriber), English only."""

    can_translate = False
    batches_regions = False
    request_options: frozenset[str] = frozenset()  # no prompt, no temperature, no token probabilities

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self._decoder: Any = None
        self._frame_rate = 100
        self._cmn_init = ""
        self._lock = threading.Lock()

    def load(self) -> None:
        from pocketsphinx import Decoder

        try:
            decoder = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="ERROR")
        except Exception as exc:  # pocketsphinx raises RuntimeError / ValueError for a broken model
            raise EngineError(f"pocketsphinx could not load its bundled model: {exc}") from exc
        self._frame_rate = int(decoder.config["frate"])
        self._cmn_init = decoder.get_cmn()
        self._decoder = decoder

    def unload(self) -> None:
        self._decoder = None

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        if request.task != "transcribe":
            raise CapabilityError(f"model {self.spec.slug!r} cannot translate", param="model")
        if request.language and request.language.lower() != LANGUAGE:
            raise UnsupportedLanguageError(
                f"model {self.spec.slug!r} only knows English ('en'), not {request.language!r}",
                param="language",
            )
        if self._decoder is None:
            raise EngineError(f"model {self.spec.slug!r} is not loaded")
        duration = len(request.audio) / ASR_SAMPLE_RATE
        regions = request.regions or (Region(0.0, duration),)
        words: list[Word] = []
        with self._lock:
            for region in regions:
                first = int(region.start * ASR_SAMPLE_RATE)
                last = int(region.end * ASR_SAMPLE_RATE)
                words += self._decode(request.audio[first:last], offset=first / ASR_SAMPLE_RATE)
        segments = group_words(words)
        text = "".join(segment.text for segment in segments)
        return TranscriptionResult(text=text, language=LANGUAGE, duration=duration, segments=segments)

    def _decode(self, audio: np.ndarray[Any, Any], *, offset: float) -> list[Word]:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        if len(pcm) < ASR_SAMPLE_RATE // self._frame_rate * 2:
            return []  # shorter than two frames: pocketsphinx reads past the buffer
        decoder = self._decoder
        decoder.set_cmn(self._cmn_init)
        for _ in range(2):  # pass 1 adapts the CMN to this audio; pass 2 decodes with it
            decoder.start_utt()
            try:
                decoder.process_raw(pcm.tobytes(), full_utt=True)
            finally:
                decoder.end_utt()
        words = []
        for item in decoder.seg():
            word = clean_word(item.word)
            if word is None:
                continue
            start = offset + item.start_frame / self._frame_rate
            end = offset + (item.end_frame + 1) / self._frame_rate
            words.append(Word(word=f" {word}", start=round(start, 3), end=round(end, 3)))
        return words
