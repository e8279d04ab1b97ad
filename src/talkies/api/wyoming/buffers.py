"""What one Wyoming connection holds between events, each bounded before it grows.

- `SentenceBuffer`: streamed synthesis text (`synthesize-chunk`) not yet spoken, at most
  TALKIES_MAX_INPUT_CHARS characters. Completed sentences come out as text arrives; each chunk is scanned
  once (the new text and the one character before it), never the whole pending text again.
- `AudioBuffer`: one utterance of `audio-chunk` payloads, at most TALKIES_MAX_UPLOAD_BYTES bytes and
  TALKIES_MAX_AUDIO_SECONDS seconds at the format `audio-start` declared, whichever is less. Past the cap
  the buffer is freed and the rest of the utterance is dropped as it arrives.
"""

from __future__ import annotations

import re

from talkies.errors import BadRequestError, InvalidAudioError, PayloadTooLargeError

_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")


class SentenceBuffer:
    """Text of a `synthesize-start` ... `synthesize-stop` stream that is not yet a whole sentence."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[str] = []  # joined only when a sentence completes: no quadratic re-copying
        self._size = 0
        self._last = ""  # the last character seen: a sentence end may sit just before the new text

    @property
    def pending(self) -> int:
        """Characters held."""
        return self._size

    def add(self, text: str) -> list[str]:
        """Take `text`; return the sentences it completes (possibly blank). Past the limit raise
        `BadRequestError` and hold nothing."""
        if self._size + len(text) > self.limit:
            size = self._size + len(text)
            self.clear()
            raise BadRequestError(
                f"streamed synthesis text reached {size} characters without a sentence end; the limit is "
                f"{self.limit} (TALKIES_MAX_INPUT_CHARS): end sentences, or send shorter text"
            )
        probe = self._last + text
        offset = len(self._last)
        sentences = []
        start = 0
        for match in _SENTENCE_END.finditer(probe, offset):
            sentences.append("".join(self._parts) + text[start : match.start() - offset])
            self._parts.clear()
            self._size = 0
            start = match.end() - offset
        rest = text[start:]
        if rest:
            self._parts.append(rest)
            self._size += len(rest)
        if text:
            self._last = text[-1]
        return sentences

    def flush(self) -> str:
        """Everything held (the last, unfinished sentence); the buffer is empty afterwards."""
        text = "".join(self._parts)
        self.clear()
        return text

    def clear(self) -> None:
        self._parts.clear()
        self._size = 0
        self._last = ""


class AudioBuffer:
    """Raw PCM of one utterance at its declared format, capped in bytes and in seconds."""

    def __init__(self, rate: int, width: int, channels: int, *, max_bytes: int, max_seconds: float) -> None:
        self.rate, self.width, self.channels = rate, width, channels
        frame = width * channels
        by_seconds = int(max_seconds * rate) * frame
        self.limit = min(max_bytes, by_seconds)
        self._by_bytes = max_bytes <= by_seconds
        self._max_bytes, self._max_seconds = max_bytes, max_seconds
        self.data = bytearray()
        self.refused = False  # over the cap: the rest of this utterance is dropped

    @property
    def format(self) -> tuple[int, int, int]:
        return self.rate, self.width, self.channels

    def add(self, payload: bytes) -> None:
        """Append `payload`; past the cap free what is held and raise (once per utterance)."""
        if self.refused:
            return
        if len(self.data) + len(payload) <= self.limit:
            self.data += payload
            return
        self.refuse()
        if self._by_bytes:
            raise PayloadTooLargeError(
                f"audio over {self._max_bytes} bytes (TALKIES_MAX_UPLOAD_BYTES) at rate={self.rate} "
                f"width={self.width} channels={self.channels}; the rest of this utterance is dropped"
            )
        raise InvalidAudioError(
            f"audio longer than {self._max_seconds:g}s (TALKIES_MAX_AUDIO_SECONDS); "
            "the rest of this utterance is dropped"
        )

    def refuse(self) -> None:
        """Free what is held and drop the rest of this utterance."""
        self.refused = True
        self.data = bytearray()
