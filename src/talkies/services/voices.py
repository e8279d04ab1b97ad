"""Custom reference voices for Qwen3-TTS base mode: stored under `$TALKIES_DATA_DIR/custom-voices/`.

`POST /v1/audio/voices` lands here with an uploaded clip already on disk. The clip is decoded (any format
the transcription endpoint takes), must last 3-60 s, and is stored as `<name>.wav` (24 kHz mono 16-bit)
with `<name>.txt` (transcript: in-context cloning) and `<name>.lang` when given. Names follow the staging
area's path rules (`talkies.services.files`: no `..`, no empty segment, no backslash or null byte, and
symlinks never followed); nested names (`clients/acme/jane`) make nested directories. Writes are atomic,
so the engine's live directory scan never sees half a voice. A name that exists is replaced.
"""

from __future__ import annotations

import contextlib
import io
import wave
from pathlib import Path
from typing import Any

import numpy as np

from talkies.audio.decode import decode_audio, probe_audio
from talkies.errors import (
    AudioTooLongError,
    InvalidAudioError,
    InvalidPathError,
    NotFoundError,
    StagedFileNotFoundError,
)
from talkies.services.files import FileStore, split_path
from talkies.settings import Settings

VOICE_RATE = 24_000
MIN_SECONDS, MAX_SECONDS = 3.0, 60.0
MAX_NAME = 200
MAX_TEXT = 4096


class VoiceNotFoundError(NotFoundError):
    pass


class VoiceService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.custom_voices_dir
        self._store: FileStore | None = None

    @property
    def store(self) -> FileStore:
        if self._store is None:
            self._store = FileStore(self.root, self.settings.max_upload_bytes)
        return self._store

    def create_sync(
        self, name: str, audio: Path, transcript: str | None = None, language: str | None = None
    ) -> dict[str, Any]:
        """Validate and store one voice; returns OpenAI's voice object."""
        name = check_name(name)
        if transcript is not None and len(transcript) > MAX_TEXT:
            raise InvalidAudioError(f"transcript is longer than {MAX_TEXT} characters", param="transcript")
        language = (language or "").strip() or None
        if language is not None and (len(language) > 40 or not language.replace("-", "").isalpha()):
            raise InvalidAudioError(
                f"language {language!r} is not a language name (e.g. English) or code (e.g. en)",
                param="language",
            )
        try:
            declared = probe_audio(audio).duration
            # A header that says "far too long" is refused before decoding; otherwise the samples decide,
            # and decoding stops at the limit: a header that under-states the length gains nothing.
            pcm = (
                decode_audio(audio, sample_rate=VOICE_RATE, max_seconds=MAX_SECONDS)
                if declared <= 2 * MAX_SECONDS
                else None
            )
        except AudioTooLongError:
            raise _wrong_length(f"is longer than {MAX_SECONDS:.0f} s (decoding stopped there)") from None
        except InvalidAudioError as exc:
            raise InvalidAudioError(f"audio_sample: {exc.message}", param="audio_sample") from None
        seconds = declared if pcm is None else len(pcm) / VOICE_RATE
        if pcm is None or not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise _wrong_length(f"lasts {seconds:.1f} s")
        if not np.any(np.abs(pcm) > 1e-4):
            raise InvalidAudioError("audio_sample is silent", param="audio_sample")
        store = self.store
        siblings = {".txt": (transcript or "").strip(), ".lang": language or ""}
        for suffix, text in siblings.items():
            if text:
                store.put_bytes_sync(name + suffix, (text + "\n").encode(), capped=False)
            else:
                self._remove(name + suffix)
        store.put_bytes_sync(name + ".wav", _wav_bytes(pcm), capped=False)  # last: the voice appears whole
        created = int(store.resolve(name + ".wav").stat().st_mtime)
        return voice_object(name, created)

    def delete_sync(self, name: str) -> dict[str, Any]:
        name = check_name(name)
        try:
            self.store.delete_sync(name + ".wav")
        except StagedFileNotFoundError:
            raise VoiceNotFoundError(
                f"no custom voice named {name!r} in {self.root} (built-in voices cannot be deleted)",
                param="name",
            ) from None
        for suffix in (".txt", ".lang"):
            self._remove(name + suffix)
        return {"object": "audio.voice.deleted", "id": name, "name": name, "deleted": True}

    def _remove(self, path: str) -> None:
        with contextlib.suppress(StagedFileNotFoundError):
            self.store.delete_sync(path)


def _wrong_length(what: str) -> InvalidAudioError:
    return InvalidAudioError(
        f"audio_sample {what}; a reference voice needs {MIN_SECONDS:.0f}-{MAX_SECONDS:.0f} s of one "
        "speaker's clean speech (10-30 s works best)",
        param="audio_sample",
    )


def check_name(name: str) -> str:
    """A voice name as a relative path without `.wav`; the staging path rules plus no hidden segment."""
    name = name.strip()
    if not name:
        raise InvalidPathError("voice name is empty", param="name")
    if len(name) > MAX_NAME:
        raise InvalidPathError(f"voice name is longer than {MAX_NAME} characters", param="name")
    if name.lower().endswith(".wav"):
        name = name[:-4]
    try:
        segments = split_path(name)
    except InvalidPathError as exc:
        raise InvalidPathError(f"voice name {name!r}: {exc.message}", param="name") from None
    if any(segment.startswith(".") for segment in segments):
        raise InvalidPathError(f"voice name {name!r}: segments may not start with '.'", param="name")
    if any(not segment.isprintable() for segment in segments):
        raise InvalidPathError(f"voice name {name!r}: control characters are not allowed", param="name")
    return "/".join(segments)


def voice_object(name: str, created_at: int) -> dict[str, Any]:
    """OpenAI's `audio.voice` object; the id is the name, usable as `voice` in /v1/audio/speech."""
    return {"object": "audio.voice", "id": name, "name": name, "created_at": created_at}


def _wav_bytes(pcm: Any) -> bytes:
    samples = (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(VOICE_RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()
