"""What the two Kokoro executors share: catalog, voice resolution, chunked synthesis with click-free joins.

Subclasses say which voices their snapshot holds, which languages have a G2P, how a voice's style pack
is read, and how one text chunk becomes PCM. Everything on the wire (voice names, blends, default,
speed range, chunking) is decided here, so `kokoro` and `kokoro_nvidia` cannot drift apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from talkies.audio.pcm_join import CrossfadeJoiner
from talkies.engines.base import TTS_SAMPLE_RATE, AudioChunk, EngineContext, SpeechRequest, Voice
from talkies.engines.kokoro.voices import (
    CATALOG,
    LANGUAGES,
    KokoroLanguage,
    VoiceBlend,
    catalog,
    default_voice,
    mix_styles,
    parse_voice,
    split_text,
)
from talkies.errors import EngineError, UnknownVoiceError

if TYPE_CHECKING:
    from talkies.registry import ModelSpec

KOKORO_SAMPLE_RATE = 24_000
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class KokoroBase:
    """Base of `KokoroEngine` and `KokoroOnnxEngine` (implements `Synthesizer`)."""

    speaks_pack_voices = False
    """True: every voice the snapshot's voice file holds is listed, not only the catalog's names; a voice
    whose language has no G2P here (jm_kumo: Japanese) speaks the request's `language` (or the registry's
    `default_language`) when it names one of LANGUAGES, else American English."""

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self._lock = threading.Lock()  # espeak-ng and the pipelines hold process-global state
        self._styles: dict[str, Any] = {}
        self._loaded = False

    # -- what a runtime provides ------------------------------------------------------------------
    def _present_voices(self) -> list[str] | None:
        """Voice names the snapshot holds; None when there is no snapshot yet."""
        raise NotImplementedError

    def _g2p_languages(self) -> set[str]:
        """Kokoro lang codes whose G2P is installed (cheap: no heavy imports)."""
        raise NotImplementedError

    def _read_style(self, name: str) -> Any:
        """One voice's style pack, shape [510, 1, 256] (torch tensor or numpy array)."""
        raise NotImplementedError

    def _synthesize_chunk(
        self, text: str, language: KokoroLanguage, style: Any, speed: float
    ) -> Iterator[Any]:
        """PCM (float32 at 24 kHz) for one text chunk; may yield several pieces."""
        raise NotImplementedError

    # -- Synthesizer -------------------------------------------------------------------------------
    def voice_names(self) -> list[str]:
        present, languages = self._present_voices(), self._g2p_languages()
        names = catalog(present, languages)
        if not self.speaks_pack_voices or not present or "a" not in languages:
            return names
        known = set(CATALOG)
        extra = [v for v in present if v not in known and (v[:1] not in LANGUAGES or v[:1] in languages)]
        return names + sorted(extra)

    def voices(self) -> list[Voice]:
        names = self.voice_names()
        default = default_voice(names, self.spec.default_voice)
        return [
            Voice(name=name, default=name == default, languages=(spoken_language(name, None).espeak,))
            for name in names
        ]

    def resolve_voice(self, voice: str | None) -> VoiceBlend:
        names = self.voice_names()
        spec = voice if voice else default_voice(names, self.spec.default_voice)
        if spec is None:
            raise UnknownVoiceError(f"model {self.spec.slug!r} has no voices", param="voice")
        return parse_voice(spec, names, model=self.spec.slug)

    def check_voice(self, voice: str) -> None:
        """Accept catalog names and blends of them (the speech service asks before anything loads)."""
        self.resolve_voice(voice)

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        """Validate now (a bad voice raises here, before any audio), then yield one chunk per sentence."""
        if not self._loaded:
            raise EngineError(f"model {self.spec.slug!r} is not loaded")
        blend = self.resolve_voice(request.voice)
        speed = min(MAX_SPEED, max(MIN_SPEED, float(request.speed)))
        chunks = split_text(request.text)
        language = spoken_language(blend.names[0], request.language)  # `instructions`: Kokoro has none
        return self._stream(chunks, blend, language, speed)

    def _stream(
        self, chunks: list[str], blend: VoiceBlend, language: KokoroLanguage, speed: float
    ) -> Iterator[AudioChunk]:
        style = self._style(blend)
        joiner = CrossfadeJoiner(KOKORO_SAMPLE_RATE)
        for text in chunks:
            with self._lock:
                pieces = [_as_pcm(p) for p in self._synthesize_chunk(text, language, style, speed)]
            for piece in pieces:
                out = joiner.push(piece)
                if out.size:
                    yield AudioChunk(out, TTS_SAMPLE_RATE)
        tail = joiner.flush()
        if tail.size:
            yield AudioChunk(tail, TTS_SAMPLE_RATE)

    def _style(self, blend: VoiceBlend) -> Any:
        with self._lock:
            return mix_styles(blend, self._cached_style)

    def _cached_style(self, name: str) -> Any:
        if name not in self._styles:
            self._styles[name] = self._read_style(name)
        return self._styles[name]

    def _languages_in_catalog(self) -> list[KokoroLanguage]:
        codes = {name[0] for name in self.voice_names()}
        return [lang for code, lang in LANGUAGES.items() if code in codes]


def _as_pcm(audio: Any) -> npt.NDArray[np.float32]:
    if hasattr(audio, "detach"):  # a torch tensor
        audio = audio.detach().cpu().numpy()
    pcm = np.asarray(audio, dtype=np.float32).reshape(-1)
    return np.clip(np.nan_to_num(pcm), -1.0, 1.0)


def spoken_language(voice: str, requested: str | None) -> KokoroLanguage:
    """The language a voice speaks: its name's first letter ("af_heart" -> American English); for a voice
    of a language without a G2P here (jm_kumo), `requested` when it names a Kokoro language (its code
    letter, espeak name or ISO code: "a", "en-us", "fr"), else American English."""
    own = LANGUAGES.get(voice[:1])
    if own is not None:
        return own
    wanted = (requested or "").strip().lower()
    for language in LANGUAGES.values():
        if wanted in (language.code, language.espeak, language.espeak.partition("-")[0]):
            return language
    return LANGUAGES["a"]
