"""Kokoro voices and text chunking, shared by the `kokoro` (PyTorch) and `kokoro_nvidia` (ONNX) executors.

Pure code: no torch, no onnxruntime. It holds

* the contract's 41-voice catalog (en-us, en-gb, es, fr, hi, it, pt-br; the ja/zh voices of the upstream
  pack are left out), filtered to the voices a snapshot really has and the languages whose G2P is here;
* the blend parser: `"af_bella+af_sky"` mixes the style vectors equally, `"af_bella(2)+af_sky(1)"` by
  weight (normalised to sum 1). A blend speaks the first voice's language. Blends are not catalog entries;
* `split_text()`: long input cut at sentence boundaries into bounded chunks (clause, then word boundaries
  for sentences too long on their own), so synthesis runs chunk by chunk with bounded memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from talkies.errors import UnknownVoiceError


@dataclass(frozen=True, slots=True)
class KokoroLanguage:
    code: str  # Kokoro / misaki lang_code: the first letter of a voice name
    espeak: str  # espeak-ng voice used for G2P
    name: str


LANGUAGES: dict[str, KokoroLanguage] = {
    lang.code: lang
    for lang in (
        KokoroLanguage("a", "en-us", "American English"),
        KokoroLanguage("b", "en-gb", "British English"),
        KokoroLanguage("e", "es", "Spanish"),
        KokoroLanguage("f", "fr-fr", "French"),
        KokoroLanguage("h", "hi", "Hindi"),
        KokoroLanguage("i", "it", "Italian"),
        KokoroLanguage("p", "pt-br", "Brazilian Portuguese"),
    )
}

CATALOG: tuple[str, ...] = (
    "af_heart", "af_alloy", "af_aoede", "af_bella", "af_jessica", "af_kore", "af_nicole", "af_nova",
    "af_river", "af_sarah", "af_sky", "am_adam", "am_echo", "am_eric", "am_fenrir", "am_liam",
    "am_michael", "am_onyx", "am_puck", "am_santa",
    "bf_alice", "bf_emma", "bf_isabella", "bf_lily", "bm_daniel", "bm_fable", "bm_george", "bm_lewis",
    "ef_dora", "em_alex", "em_santa",
    "ff_siwis",
    "hf_alpha", "hf_beta", "hm_omega", "hm_psi",
    "if_sara", "im_nicola",
    "pf_dora", "pm_alex", "pm_santa",
)  # fmt: skip
"""The contract's Kokoro voices, in the order the catalog lists them."""

DEFAULT_VOICE = "af_heart"
MAX_CHUNK_CHARS = 300
"""Upper bound of one synthesis chunk; Kokoro takes at most 510 phonemes per forward pass."""


def voice_language(name: str) -> KokoroLanguage:
    return LANGUAGES[name[0]]


def catalog(present: Iterable[str] | None, languages: Iterable[str]) -> list[str]:
    """The catalog voices that the snapshot holds (`present`; None = not downloaded yet: all of them)
    and whose language (a Kokoro lang code) has a G2P installed."""
    wanted = set(languages)
    have = None if present is None else set(present)
    return [v for v in CATALOG if v[0] in wanted and (have is None or v in have)]


def default_voice(voices: Sequence[str], configured: str | None) -> str | None:
    """The registry's `default_voice`, else `af_heart`, else the first voice there is."""
    for candidate in (configured, DEFAULT_VOICE):
        if candidate and candidate in voices:
            return candidate
    return voices[0] if voices else None


@dataclass(frozen=True, slots=True)
class VoiceBlend:
    """One voice, or several mixed by weight. Weights are normalised to sum to 1."""

    parts: tuple[tuple[str, float], ...]

    @property
    def language(self) -> KokoroLanguage:
        return voice_language(self.parts[0][0])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parts)


_PART = re.compile(r"^\s*(?P<name>[^()+\s]+)\s*(?:\((?P<weight>[^()]*)\))?\s*$")


def parse_voice(spec: str, voices: Sequence[str], *, model: str | None = None) -> VoiceBlend:
    """Parse `name`, `a+b` or `a(2)+b(1)` against `voices`; UnknownVoiceError names the bad part."""
    known = set(voices)
    where = f" for model {model!r}" if model else ""
    listing = f"valid voices{where}: {', '.join(voices)} (blend them as 'a+b' or 'a(2)+b(1)')"
    if not spec or not spec.strip():
        raise UnknownVoiceError(f"empty voice; {listing}", param="voice")
    weights: dict[str, float] = {}
    for raw in spec.split("+"):
        match = _PART.match(raw)
        if match is None:
            raise UnknownVoiceError(f"malformed voice {raw.strip()!r} in {spec!r}; {listing}", param="voice")
        name = match["name"]
        if name not in known:
            raise UnknownVoiceError(f"unknown voice {name!r}{where}; {listing}", param="voice")
        weight = 1.0
        if match["weight"] is not None:
            text = match["weight"].strip()
            try:
                weight = float(text)
            except ValueError:
                weight = math.nan
            if not math.isfinite(weight) or weight <= 0:
                raise UnknownVoiceError(
                    f"bad weight {text!r} for voice {name!r} in {spec!r}: a weight is a positive number; "
                    f"{listing}",
                    param="voice",
                )
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    return VoiceBlend(tuple((name, w / total) for name, w in weights.items()))


def mix_styles(blend: VoiceBlend, load: Callable[[str], Any]) -> Any:
    """Weighted sum of the voices' style packs (numpy arrays or torch tensors, whatever `load` gives)."""
    total: Any = None
    for name, weight in blend.parts:
        term = load(name) * weight
        total = term if total is None else total + term
    return total


# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by space and a non-lowercase letter,
# so "e.g. this" and "3.5 km" stay whole; line breaks always end one.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+(?=[^a-z\s])|\s*\n+\s*")
_CLAUSE_END = re.compile(r"(?<=[,;:—–])\s+")


def split_text(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Cut `text` into chunks of at most `max_chars`: one per sentence, long sentences at clauses,
    then words (a single word longer than `max_chars` is cut where it must be)."""
    chunks: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        if len(sentence) <= max_chars:
            chunks.append(sentence)
            continue
        pieces: list[str] = []
        for clause in _CLAUSE_END.split(sentence):
            pieces.extend(clause.split(" ") if len(clause) > max_chars else [clause])
        chunks.extend(_pack(pieces, max_chars))
    return chunks


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    out: list[str] = []
    current = ""
    for piece in pieces:
        while len(piece) > max_chars:  # one unbroken run of characters: no boundary to respect
            if current:
                out.append(current)
                current = ""
            out.append(piece[:max_chars])
            piece = piece[max_chars:]
        if not piece:
            continue
        if current and len(current) + 1 + len(piece) > max_chars:
            out.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    if current:
        out.append(current)
    return out
