"""A real long file through the server's VAD: three minutes of espeak-ng sentences between silences of
1 to 6 s (so some VAD regions share a 30 s clip and some do not), transcribed by Whisper base.

Every sentence must come back whole, at its own place in the file: each word's timestamps (absolute, from
the start of the file) fall inside the span of the sentence it belongs to, and the words found in a span
are the words Whisper base hears when that sentence is sent on its own (up to SAME_TEXT), the first one
and the last one ending where they do when it is heard alone (FIRST_WORD_END, LAST_WORD_END). A region
cut too tight, a clip offset applied twice or a segment lost between two clips all break that.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.speech import SAMPLE_RATE, SENTENCES, espeak
from tests.real.helpers import transcribe, wer, words

SECONDS = 180.0
PAUSES = (1.0, 6.0)
EDGE = 0.3  # seconds a word may stray past its sentence's first or last sample (Whisper's alignment)
FIRST_WORD_END = LAST_WORD_END = 0.3
"""How far the first and the last word of a sentence may end from where they end when the sentence is
heard alone. Measured on 24 sentences: the first word within 0.15 s, the last within 0.20 s. Ends, not
starts: a word's start moved 0.1-0.4 s with the silence in front of it (the VAD region's padding versus
the clip's lead), its end did not. A dropped first or last word moves the end by a whole word (0.3-0.6 s)
and changes the text (SAME_TEXT)."""
SAME_TEXT, MEAN_TEXT = 0.34, 0.12
"""Word error rate allowed between a sentence heard inside the long file and heard alone: per sentence, and
the mean over the file. Whisper's context differs (a 30 s clip holds several sentences and is decoded as
one), so a word can change ("jump" / "jumps", "speech" / "each" in espeak-ng's voice); measured here on
24 sentences: 0 for 15 of them, at most 0.27 (3 words of 11), mean 0.055."""
VOICE = "en-us+klatt"  # the espeak-ng voice Whisper base hears almost word for word


@dataclass(frozen=True)
class LongFile:
    audio: np.ndarray
    spans: list[tuple[float, float]]  # sentence i is SENTENCES[i % len(SENTENCES)]

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """From the first to the last audible sample: a span is where the sentence really sounds."""
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def speech() -> LongFile:
    rng = np.random.default_rng(26)
    sentences = [_trimmed(espeak(text, voice=VOICE)) for text in SENTENCES]
    pieces: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    cursor = 0
    while True:
        gap = np.zeros(int(rng.uniform(*PAUSES) * SAMPLE_RATE), dtype=np.float32)
        sentence = sentences[len(spans) % len(sentences)]
        if cursor + len(gap) + len(sentence) > SECONDS * SAMPLE_RATE:
            break
        cursor += len(gap)
        spans.append((cursor / SAMPLE_RATE, (cursor + len(sentence)) / SAMPLE_RATE))
        pieces += [gap, sentence]
        cursor += len(sentence)
    pieces.append(np.zeros(int(SECONDS * SAMPLE_RATE) - cursor, dtype=np.float32))
    return LongFile(np.concatenate(pieces), spans)


def _wav(audio: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


@dataclass(frozen=True)
class Heard:
    words: list[str]
    lead: float  # the first word's end after the sentence's first sample, seconds
    trail: float  # the last word's end before the sentence's last sample, seconds
    # (ends, not starts: Whisper starts a word where the silence before it starts, so a word's start says
    # how much silence was in front of it, while its end is where the word ends)


def _heard(timed: list[dict[str, Any]], span: tuple[float, float], offset: float = 0.0) -> Heard:
    timed = [w for w in timed if words(w["word"])]
    assert timed, span
    return Heard(
        [w for word in timed for w in words(word["word"])],
        timed[0]["end"] + offset - span[0],
        span[1] - (timed[-1]["end"] + offset),
    )


@pytest.fixture(scope="module")
def alone(client: httpx.Client, speech: LongFile) -> list[Heard]:
    """Each sentence transcribed on its own (a short file: no VAD), as the reference."""
    out = []
    for index in range(len(SENTENCES)):
        start, end = speech.spans[index]
        first = int((start - 0.5) * SAMPLE_RATE)
        clip = speech.audio[first : int((end + 0.5) * SAMPLE_RATE)]
        body = transcribe(
            client, _wav(clip), f"sentence-{index}.wav", response_format="verbose_json",
            **{"timestamp_granularities[]": "word"},
        ).json()  # fmt: skip
        out.append(_heard(body["words"], (start, end), offset=first / SAMPLE_RATE))
    return out


def test_long_file_keeps_every_sentence_whole_and_in_place(
    client: httpx.Client, speech: LongFile, alone: list[Heard]
) -> None:
    assert speech.duration > 30 * 5  # well past TALKIES_VAD_CHUNK_THRESHOLD: the VAD path
    body = transcribe(
        client, _wav(speech.audio), "long.wav", response_format="verbose_json",
        **{"timestamp_granularities[]": "word"},
    ).json()  # fmt: skip
    assert abs(body["duration"] - speech.duration) < 0.05
    found: list[list[dict[str, Any]]] = [[] for _ in speech.spans]
    for word in body["words"]:
        middle = (word["start"] + word["end"]) / 2
        inside = [i for i, (a, b) in enumerate(speech.spans) if a - EDGE <= middle <= b + EDGE]
        assert len(inside) == 1, (word, "outside every sentence")  # never in a silence, never shifted
        assert a_before_b(word, speech.spans[inside[0]]), word
        found[inside[0]].append(word)
    errors, edges = [], []
    for index, timed in enumerate(found):
        heard, reference = _heard(timed, speech.spans[index]), alone[index % len(SENTENCES)]
        errors.append(wer(" ".join(reference.words), " ".join(heard.words)))
        edges.append((heard.lead - reference.lead, heard.trail - reference.trail))
        lead, trail = edges[-1]
        print(f"sentence {index:2d} at {speech.spans[index][0]:6.1f} s: WER vs alone {errors[-1]:.2f}, "
              f"first / last word {lead:+.2f} s / {-trail:+.2f} s from where they are alone")  # fmt: skip
    assert max(abs(late) for late, _ in edges) <= FIRST_WORD_END, edges  # nothing cut at a region's start
    assert max(abs(early) for _, early in edges) <= LAST_WORD_END, edges  # nor at its end
    assert max(errors) <= SAME_TEXT, errors
    assert sum(errors) / len(errors) <= MEAN_TEXT, errors


def a_before_b(word: dict[str, float], span: tuple[float, float]) -> bool:
    """The word's own span sits inside the sentence's, give or take Whisper's alignment."""
    start, end = span
    return start - 2 * EDGE <= word["start"] <= word["end"] <= end + 2 * EDGE
