"""Test-only engines for the engine host. They run real code in real worker processes; only the model is
fake. Behaviour is chosen through `EngineContext.options` (load) and the request (calls)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from talkies.engines.base import (
    AudioChunk,
    EngineContext,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
    Voice,
)
from talkies.errors import InvalidAudioError, ModelLoadError, UnknownVoiceError
from talkies.registry import ModelSpec

TARGET = "tests.engines.fake_engines"


class EchoTranscriber:
    """Answers with the length and checksum of the audio it received. Prompts steer faults."""

    can_translate = False
    batches_regions = False

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self.ballast: np.ndarray | None = None
        self.kept: np.ndarray | None = None

    def load(self) -> None:
        options = self.context.options
        time.sleep(float(options.get("load_sleep", 0.0)))  # type: ignore[arg-type]
        if options.get("load_error") == "domain":
            raise ModelLoadError(f"model {self.context.slug!r}: snapshot is missing config.json")
        if options.get("load_error") == "foreign":
            raise FileNotFoundError(2, "No such file or directory", "/nowhere/model.bin")
        if options.get("load_error") == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if options.get("translate"):
            self.can_translate = True
        megabytes = int(options.get("alloc_mb", 0))  # type: ignore[call-overload]
        if megabytes:
            self.ballast = np.ones(megabytes * 1024 * 1024 // 8, dtype=np.float64)  # touched: resident

    def unload(self) -> None:
        self.ballast = None

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        prompt = request.prompt or ""
        if prompt == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if prompt.startswith("hang"):
            if prompt.startswith("hang:"):
                Path(prompt.removeprefix("hang:")).touch()
            time.sleep(3600)
        if prompt.startswith("sleep:"):
            time.sleep(float(prompt.removeprefix("sleep:")))
        if prompt == "bad-audio":
            raise InvalidAudioError("audio is silent", param="file")
        if prompt == "bug":
            raise RuntimeError("engine bug")
        if prompt == "keep":
            self.kept = request.audio  # an engine that holds on to a request's audio
        if prompt == "kept":
            return TranscriptionResult(text=f"{float(np.sum(self.kept)):.1f}", language=None, duration=0.0)
        if prompt.startswith("rendezvous:"):
            _rendezvous(Path(prompt.removeprefix("rendezvous:")), parties=2)
        audio = request.audio
        text = f"{audio.size} {audio.dtype} {float(np.sum(audio, dtype=np.float64)):.6f} pid={os.getpid()}"
        return TranscriptionResult(text=text, language=request.language, duration=audio.size / 16_000)


class ChunkSynthesizer:
    """Yields `options["chunks"]` chunks of 0.1 s, sleeping `options["pause"]` seconds before each after the
    first; writes a marker file when it finishes or is cancelled (`options["marker"]`)."""

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.context = context

    def voices(self) -> list[Voice]:
        return [Voice("alpha", default=True, origin=f"pid={os.getpid()}"), Voice("beta")]

    def check_voice(self, name: str) -> None:
        """Accepts blends of known voices ("alpha+beta"), which voices() does not list."""
        if not all(part in ("alpha", "beta") for part in name.split("+")):
            raise UnknownVoiceError(f"voice {name!r} not found", param="voice")

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        self.check_voice(request.voice)
        count = int(request.options.get("chunks", 3))  # type: ignore[call-overload]
        pause = float(request.options.get("pause", 0.0))  # type: ignore[arg-type]
        marker = request.options.get("marker")
        done = 0
        try:
            for index in range(count):
                if index:
                    time.sleep(pause)
                    if "gate" in request.options:
                        _wait_for(Path(str(request.options["gate"])))
                if request.options.get("crash_at") == index:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield AudioChunk(np.full(2400, index, dtype=np.float32), 24_000)
                done += 1
        finally:
            if marker:
                with open(str(marker), "w") as file:
                    file.write(f"{done}")


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)


def _rendezvous(directory: Path, parties: int, timeout: float = 30.0) -> None:
    """Return only once `parties` calls are inside this function at the same time."""
    import threading

    (directory / f"{os.getpid()}-{threading.get_ident()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(directory.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise RuntimeError("the other call never arrived: calls are serialized")
        time.sleep(0.01)


class SharedEchoTranscriber(EchoTranscriber):
    """An EchoTranscriber whose weights every slug shares: the slugs load into one worker process."""

    def weights_key(self) -> tuple[str, str]:
        return ("shared-echo", str(self.context.options.get("weights", "one")))
