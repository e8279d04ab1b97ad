"""Decoder tokens -> words, segments and a language for the `parakeet_cpp` executor (pure functions).

A transducer (TDT / RNNT) or CTC decoder emits SentencePiece tokens, each stamped with the encoder frame
it was emitted on. A token that starts with a space (SentencePiece's word boundary) starts a word. The
runtime reports no token durations, so a word ends one encoder frame after its last token, and never
after the next word starts.

Multilingual Parakeet-family checkpoints (Nemotron-3.5-ASR) emit a language tag such as `<de-DE>` or
`<|de|>` as a token, usually the last one. Tags are never words: they are dropped from the text and
the words, and the last one names the detected language (ISO-639-1, `de`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from talkies.engines.base import Word

LANGUAGE_TAG = re.compile(r"^<\|?(?P<code>[a-z]{2,3})(?:[-_][A-Za-z0-9]{2,4})?\|?>$")
"""`<en-US>`, `<de_DE>`, `<|fr|>`, `<yue>`: a language tag token; `<blk>`, `<unk>` are not (not a code)."""

NOT_LANGUAGES = frozenset({"blk", "unk", "pad", "eos", "bos", "sil", "eou", "eob", "nosp", "sp"})


def language_tags(vocab: Mapping[int, str]) -> dict[int, str]:
    """Token id -> ISO-639-1 code for every language tag in `vocab` (id -> token text)."""
    tags = {}
    for token_id, token in vocab.items():
        match = LANGUAGE_TAG.match(token.strip())
        if match and match["code"] not in NOT_LANGUAGES:
            tags[token_id] = match["code"]
    return tags


def tag_language(token: str) -> str | None:
    """The ISO code a token tags, or None when it is not a language tag."""
    match = LANGUAGE_TAG.match(token.strip())
    if match is None or match["code"] in NOT_LANGUAGES:
        return None
    return match["code"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one decoded clip holds, in seconds from the start of the clip."""

    tokens: Sequence[str]  # token texts, SentencePiece's "▁" already turned into a space
    timestamps: Sequence[float]  # the start of each token
    logprobs: Sequence[float] | None = None


def words_and_language(
    decoded: Decoded, *, frame: float, offset: float = 0.0
) -> tuple[list[Word], str | None]:
    """Words (with absolute times: `offset` is the clip's start in the file) and the last language tag."""
    language = None
    pieces: list[tuple[str, float, float | None]] = []
    logprobs: Iterable[float | None] = decoded.logprobs if decoded.logprobs is not None else _nones()
    for token, start, logprob in zip(decoded.tokens, decoded.timestamps, logprobs, strict=False):
        code = tag_language(token)
        if code is not None:
            language = code
            continue
        pieces.append((token, float(start), logprob))
    words: list[Word] = []
    logs: list[list[float]] = []
    last_token_start = 0.0
    for token, start, logprob in pieces:
        if not words or token[:1].isspace():
            if words:
                words[-1].end = min(last_token_start + frame, start)
            words.append(Word(word=" " + token.strip(), start=start, end=start))
            logs.append([])
        else:
            words[-1].word += token.strip()
        if logprob is not None:
            logs[-1].append(float(logprob))
        last_token_start = start
    if words:
        words[-1].end = last_token_start + frame
    kept: list[Word] = []
    for word, word_logs in zip(words, logs, strict=True):
        if word.word.strip():
            start = word.start + offset
            kept.append(
                Word(
                    word=word.word,
                    start=round(start, 3),
                    end=round(max(word.end + offset, start), 3),
                    probability=_probability(word_logs),
                )
            )
    return kept, language


def _probability(logprobs: list[float]) -> float | None:
    if not logprobs:
        return None
    mean = sum(logprobs) / len(logprobs)
    return min(1.0, max(0.0, math.exp(mean))) if math.isfinite(mean) else 0.0


def _nones() -> Iterable[None]:
    while True:
        yield None
