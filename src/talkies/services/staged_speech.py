"""Speech synthesized straight into the staging area (the MCP `speak` tool): encoded chunks go to a `.part`
file as they are produced, renamed into place when synthesis ends, removed if it fails."""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass

import anyio
import anyio.to_thread

from talkies.audio.decode import probe_audio
from talkies.engines.base import TTS_SAMPLE_RATE
from talkies.services.files import FileStore
from talkies.services.speech import SpeechOptions, SpeechService

SPEECH_DIR = "speech"


@dataclass(frozen=True, slots=True)
class StagedSpeech:
    path: str  # relative to the staging root
    format: str
    content_type: str
    size: int
    duration: float  # seconds


def default_speech_path(fmt: str) -> str:
    return f"{SPEECH_DIR}/{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.{fmt}"


async def speak_to_file(
    speech: SpeechService, files: FileStore, options: SpeechOptions, path: str | None = None
) -> StagedSpeech:
    """Validate, synthesize and stage. The path is checked before synthesis starts."""
    plan = await anyio.to_thread.run_sync(speech.validate, options)
    target = path or default_speech_path(plan.format)
    writer = await anyio.to_thread.run_sync(files.begin_write, target)
    size = 0
    try:
        # aclosing: a failed write must release the model the stream holds, not wait for the GC.
        async with contextlib.aclosing(speech.stream(plan, whole_body=True)) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                await anyio.to_thread.run_sync(writer.write, chunk)
        await anyio.to_thread.run_sync(writer.commit)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(writer.abort)
        raise
    staged = files.resolve(target)
    if plan.format == "pcm":
        duration = size / (2 * TTS_SAMPLE_RATE)  # raw 16-bit mono at the server's output rate
    else:
        duration = (await anyio.to_thread.run_sync(probe_audio, staged)).duration
    return StagedSpeech(
        path=staged.relative_to(files.root).as_posix(),
        format=plan.format,
        content_type=plan.content_type,
        size=size,
        duration=duration,
    )
