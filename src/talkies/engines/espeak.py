"""espeak-ng text to speech: weight-free, always available where the `espeak-ng` binary is installed.

Voices are espeak-ng's own language voices under their own names (`en-us`, `fr-fr`, `de`, ...), read once
from `espeak-ng --voices`. A voice may carry an espeak variant after a `+` (`en-us+klatt`, `en-us+f3`);
`check_voice` accepts those too, since espeak-ng silently ignores an unknown variant.

Each sentence is one `espeak-ng --stdout` process (argv list, text on stdin, never a shell), so the first
chunk is ready after the first sentence; its WAV is parsed here and resampled to the server's 24 kHz.
"""

from __future__ import annotations

import functools
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from talkies.engines.base import TTS_SAMPLE_RATE, AudioChunk, EngineContext, SpeechRequest, Voice
from talkies.errors import EngineError, EngineUnavailableError, UnknownVoiceError

if TYPE_CHECKING:
    from talkies.registry import ModelSpec

DEFAULT_VOICE = "en-us"
DEFAULT_WPM = 175
"""espeak-ng's own default rate; speed 1.0 maps to it."""
MIN_WPM, MAX_WPM = 80, 1000
"""espeak-ng raises anything below 80 wpm to 80; above ~1000 it stops being intelligible."""
PROCESS_TIMEOUT_S = 120.0

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


@functools.lru_cache(maxsize=4)
def _catalog(binary: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """(language voices in espeak's order, variant names), from `--voices` and `--voices=variant`."""
    voices = _list_voices(binary, "--voices")
    languages = tuple(dict.fromkeys(lang for lang, _ in voices))
    variants = frozenset(file.removeprefix("!v/") for _, file in _list_voices(binary, "--voices=variant"))
    return languages, variants


def _list_voices(binary: str, flag: str) -> list[tuple[str, str]]:
    """(language, file) per row of espeak-ng's voice table (header skipped)."""
    out = _run([binary, flag], b"").decode("utf-8", "replace")
    rows = []
    for line in out.splitlines()[1:]:
        # Pty Language Age/Gender VoiceName File [Other Languages]; VoiceName never holds spaces.
        fields = line.split()
        if len(fields) >= 5:
            rows.append((fields[1], fields[4]))
    return rows


def _run(argv: list[str], stdin: bytes) -> bytes:
    """Run espeak-ng to completion; a non-zero exit becomes an EngineError carrying its stderr."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin, timeout=PROCESS_TIMEOUT_S)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        reason = " ".join(err.decode("utf-8", "replace").split()) or f"exit status {proc.returncode}"
        raise EngineError(f"espeak-ng failed: {reason}")
    return out


def parse_wav(data: bytes) -> tuple[npt.NDArray[np.float32], int]:
    """Mono float32 PCM and its rate from espeak's 16-bit WAV.

    espeak-ng writes placeholder RIFF/data sizes when streaming to stdout, so the data chunk is read to EOF.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EngineError("espeak-ng did not produce a WAV stream")
    pos, rate, channels, bits = 12, 0, 1, 16
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            _fmt, channels, rate, _brate, _align, bits = struct.unpack_from("<HHIIHH", data, body)
        elif chunk_id == b"data":
            if bits != 16 or rate <= 0:
                raise EngineError(f"espeak-ng produced {bits}-bit audio at {rate} Hz; expected 16-bit PCM")
            raw = data[body : body + min(size, len(data) - body)]
            samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
            if channels > 1:
                samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
            return (samples.astype(np.float32) / 32768.0), rate
        pos = body + size + (size & 1)
    raise EngineError("espeak-ng's WAV has no data chunk")


def words_per_minute(speed: float) -> int:
    return int(min(MAX_WPM, max(MIN_WPM, round(DEFAULT_WPM * speed))))


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


class EspeakEngine:
    """The `espeak` executor (Synthesizer)."""

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self.default_voice = spec.default_voice or DEFAULT_VOICE
        self._binary: str | None = None

    def _find_binary(self) -> str:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise EngineUnavailableError(
                f"model {self.spec.slug!r} needs the espeak-ng program (apt-get install espeak-ng)"
            )
        return binary

    def load(self) -> None:
        self._binary = self._find_binary()
        _catalog(self._binary)

    def unload(self) -> None:
        self._binary = None

    def voices(self) -> list[Voice]:
        languages, _ = _catalog(self._binary or self._find_binary())
        names = list(languages)
        if self.default_voice not in names:
            names.insert(0, self.default_voice)  # e.g. a registry default with a variant, "en-us+klatt"
        return [
            Voice(name, default=name == self.default_voice, languages=(name.partition("+")[0],))
            for name in names
        ]

    def check_voice(self, name: str) -> None:
        """Raise UnknownVoiceError unless `name` is a language voice, optionally `+variant`."""
        languages, variants = _catalog(self._binary or self._find_binary())
        language, plus, variant = name.partition("+")
        if language in languages and (not plus or variant in variants):
            return
        listed = ", ".join(v.name for v in self.voices())
        raise UnknownVoiceError(
            f"voice {name!r} is not available for model {self.spec.slug!r}; voices: {listed} "
            "(a language voice may take an espeak variant after '+', e.g. en-us+klatt)",
            param="voice",
        )

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        from talkies.audio.encode import resample

        binary = self._binary or self._find_binary()
        argv = [
            binary,
            "--stdout",
            "-b",
            "1",
            "-v",
            request.voice,
            "-s",
            str(words_per_minute(request.speed)),
        ]
        for sentence in split_sentences(request.text):
            pcm, rate = parse_wav(_run(argv, sentence.encode("utf-8")))
            if rate != TTS_SAMPLE_RATE:
                pcm = resample(pcm, rate, TTS_SAMPLE_RATE)
            yield AudioChunk(pcm=np.ascontiguousarray(pcm, dtype=np.float32), sample_rate=TTS_SAMPLE_RATE)
