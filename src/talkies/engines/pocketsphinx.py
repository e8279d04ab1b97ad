"""CMU PocketSphinx speech recognition: weight-free, the US English model bundled in the pocketsphinx wheel.

Word timestamps come from the decoder's segmentation (`ps_seg_*`, in frames at `frate` per second);
silences, sentence markers and fillers are dropped, and `engines.common.group_words` starts a new segment
at each pause of half a second or more so subtitles get one cue per phrase. A pocketsphinx decoder is not
thread-safe and holds ~90 MiB (acoustic model, language model, dictionary): the engine keeps one per
concurrent request, up to the model's `max_concurrency` (2 in the shipped registries), creating the next one
only when a request finds every existing one busy. Since a decode releases the GIL, two requests really
decode at the same time on two cores.

Cepstral mean normalization: the decoder carries its CMN estimate from one utterance to the next, so a
request's words would depend on what earlier requests decoded. Each region is decoded twice from the same
initial estimate: the first pass only adapts the CMN to this audio, the second gives the words. Results
are then a function of the audio alone, and better on short clips (the README's "Hello from talkies."
round-trips only this way).

The GIL: the Python binding's `Decoder.process_raw` holds the GIL for a whole utterance (a 20 s file froze
every other thread of the process for 3.8 s), which in the server process would freeze the event loop,
every other request and every health probe. So the decoder is driven through pocketsphinx's C API with
ctypes (`CDecoder`): a ctypes call releases the GIL while it runs (the same file: other threads never
waited more than 9 ms). It is the same library (the binding's own extension module exports the C API),
the same configuration (built by the binding's `Config`) and the same calls, so the same words.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class SegmentFrames:
    """One entry of the decoder's word segmentation: the token and its inclusive frame span."""

    token: str
    start_frame: int
    end_frame: int


@functools.cache
def _c_api() -> ctypes.CDLL:
    """pocketsphinx's C API, from the extension module of the Python binding (it exports the ps_* symbols).
    Calls through a CDLL release the GIL."""
    from pocketsphinx import _pocketsphinx

    lib = ctypes.CDLL(_pocketsphinx.__file__)
    ptr, text = ctypes.c_void_p, ctypes.c_char_p
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "ps_config_parse_json": (ptr, [ptr, text]),
        "ps_config_free": (ctypes.c_int, [ptr]),
        "ps_config_int": (ctypes.c_long, [ptr, text]),
        "ps_init": (ptr, [ptr]),
        "ps_get_config": (ptr, [ptr]),
        "ps_free": (ctypes.c_int, [ptr]),
        "ps_get_cmn": (text, [ptr, ctypes.c_int]),
        "ps_set_cmn": (ctypes.c_int, [ptr, text]),
        "ps_start_utt": (ctypes.c_int, [ptr]),
        "ps_process_raw": (
            ctypes.c_int,
            [ptr, ctypes.POINTER(ctypes.c_int16), ctypes.c_size_t, ctypes.c_int, ctypes.c_int],
        ),
        "ps_end_utt": (ctypes.c_int, [ptr]),
        "ps_seg_iter": (ptr, [ptr]),
        "ps_seg_next": (ptr, [ptr]),
        "ps_seg_word": (text, [ptr]),
        "ps_seg_frames": (None, [ptr, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


class CDecoder:
    """A pocketsphinx decoder owned through the C API (see the module docstring). One decode at a time (a
    lock); `close` waits for a running decode, then frees it."""

    def __init__(self, sample_rate: int) -> None:
        from pocketsphinx import Config

        self._lock = threading.Lock()
        self._lib = lib = _c_api()
        # The binding's Config fills in the bundled model's paths; the C decoder is built from it.
        settings = Config(samprate=sample_rate, loglevel="ERROR").dumps().encode()
        config = lib.ps_config_parse_json(None, settings)
        if not config:
            raise EngineError("pocketsphinx rejected its configuration")
        try:
            self._ps = lib.ps_init(config)  # keeps its own reference to the configuration
        finally:
            lib.ps_config_free(config)
        if not self._ps:
            raise EngineError("pocketsphinx could not load its bundled model")
        self.frame_rate = int(lib.ps_config_int(lib.ps_get_config(self._ps), b"frate"))
        self.initial_cmn: bytes = lib.ps_get_cmn(self._ps, 0)

    def decode(self, pcm: np.ndarray[Any, Any], *, passes: int = 2) -> list[SegmentFrames]:
        """Decode 16-bit mono `pcm` as whole utterances `passes` times from the initial CMN estimate (the
        earlier passes only adapt it); the last pass's segmentation."""
        with self._lock:
            return self._decode(pcm, passes)

    def _decode(self, pcm: np.ndarray[Any, Any], passes: int) -> list[SegmentFrames]:
        lib, ps = self._lib, self._ps
        if not ps:
            raise EngineError("pocketsphinx decoder used after it was closed")
        samples = np.ascontiguousarray(pcm, dtype="<i2")
        data = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))
        lib.ps_set_cmn(ps, self.initial_cmn)
        for _ in range(passes):
            if lib.ps_start_utt(ps) < 0:
                raise EngineError("pocketsphinx could not start an utterance")
            try:
                if lib.ps_process_raw(ps, data, len(samples), 0, 1) < 0:
                    raise EngineError("pocketsphinx failed to decode the audio")
            finally:
                lib.ps_end_utt(ps)
        segments = []
        first, last = ctypes.c_int(), ctypes.c_int()
        seg = lib.ps_seg_iter(ps)
        while seg:  # ps_seg_next frees the iterator at the end
            lib.ps_seg_frames(seg, ctypes.byref(first), ctypes.byref(last))
            token = lib.ps_seg_word(seg).decode("utf-8", "replace")
            segments.append(SegmentFrames(token, first.value, last.value))
            seg = lib.ps_seg_next(seg)
        return segments

    def close(self) -> None:
        with self._lock:
            ps, self._ps = self._ps, None
            if ps:
                self._lib.ps_free(ps)


class PocketsphinxEngine:
    supported_languages = ("en",)  # the US English model bundled in the wheel
    """The `pocketsphinx` executor (Transcriber), English only."""

    can_translate = False
    batches_regions = False
    request_options: frozenset[str] = frozenset()  # no prompt, no temperature, no token probabilities
    cheap_partials = True  # realtime: a turn so far re-decodes in a few % of its length (interim deltas)

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self._limit = max(1, spec.max_concurrency)
        self._decoders: set[CDecoder] = set()  # this load's decoders, idle or busy
        self._idle: list[CDecoder] = []  # those not decoding right now
        self._making = 0  # decoders being made for requests that found every one busy
        self._loaded = False
        self._changed = threading.Condition()

    def load(self) -> None:
        try:
            decoder = CDecoder(ASR_SAMPLE_RATE)
        except EngineError:
            raise
        except Exception as exc:  # a broken install: the binding or its library missing pieces
            raise EngineError(f"pocketsphinx could not load its bundled model: {exc}") from exc
        with self._changed:
            self._decoders, self._idle, self._loaded = {decoder}, [decoder], True

    def unload(self) -> None:
        with self._changed:
            self._loaded = False
            idle, self._idle = self._idle, []
            self._decoders = set()
            self._changed.notify_all()
        for decoder in idle:
            decoder.close()  # a busy one is closed when its decode returns (`_give_back`)

    def _take(self) -> CDecoder:
        """An idle decoder; a new one while fewer than `max_concurrency` exist (a decoder holds ~90 MiB, so
        they are created as concurrent requests need them); else wait for one."""
        with self._changed:
            while self._loaded and not self._idle and len(self._decoders) + self._making >= self._limit:
                self._changed.wait()
            if not self._loaded:
                raise EngineError(f"model {self.spec.slug!r} is not loaded")
            if self._idle:
                return self._idle.pop()
            self._making += 1
            decoders = self._decoders
        try:
            decoder = CDecoder(ASR_SAMPLE_RATE)
        finally:
            with self._changed:
                self._making -= 1
                self._changed.notify()
        with self._changed:
            current = decoders is self._decoders and self._loaded
            if current:
                self._decoders.add(decoder)
        if not current:  # unloaded while it was being made
            decoder.close()
            raise EngineError(f"model {self.spec.slug!r} is not loaded")
        return decoder

    def _give_back(self, decoder: CDecoder) -> None:
        """Back to the idle set; closed instead when the model was unloaded (or reloaded) meanwhile."""
        with self._changed:
            if self._loaded and decoder in self._decoders:
                self._idle.append(decoder)
                self._changed.notify()
                return
        decoder.close()

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        if request.task != "transcribe":
            raise CapabilityError(f"model {self.spec.slug!r} cannot translate", param="model")
        if request.language and request.language.lower() != LANGUAGE:
            raise UnsupportedLanguageError(
                f"model {self.spec.slug!r} only knows English ('en'), not {request.language!r}",
                param="language",
            )
        duration = len(request.audio) / ASR_SAMPLE_RATE
        regions = request.regions or (Region(0.0, duration),)
        words: list[Word] = []
        decoder = self._take()
        try:
            for region in regions:
                first = int(region.start * ASR_SAMPLE_RATE)
                last = int(region.end * ASR_SAMPLE_RATE)
                words += self._decode(decoder, request.audio[first:last], offset=first / ASR_SAMPLE_RATE)
        finally:
            self._give_back(decoder)
        segments = group_words(words)
        text = "".join(segment.text for segment in segments)
        return TranscriptionResult(text=text, language=LANGUAGE, duration=duration, segments=segments)

    @staticmethod
    def _decode(decoder: CDecoder, audio: np.ndarray[Any, Any], *, offset: float) -> list[Word]:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        if len(pcm) < ASR_SAMPLE_RATE // decoder.frame_rate * 2:
            return []  # shorter than two frames: pocketsphinx reads past the buffer
        words = []
        for item in decoder.decode(pcm):
            word = clean_word(item.token)
            if word is None:
                continue
            start = offset + item.start_frame / decoder.frame_rate
            end = offset + (item.end_frame + 1) / decoder.frame_rate
            words.append(Word(word=f" {word}", start=round(start, 3), end=round(end, 3)))
        return words
