"""Acoustic speaker diarization for `diarized_json`: who spoke when on one microphone, and known speakers.

The diarizer is the registry model TALKIES_DIARIZATION_MODEL names (a model of modality `diarization`),
loaded, evicted and budgeted by the pool like any model. A mono file in `diarized_json` is diarized when a
diarizer is enabled; a stereo file keeps one speaker per channel unless `acoustic_diarization=true`.
The whole file is diarized in one call (never per VAD region, which would lose who is who across
regions), while the ASR model runs as usual (VAD, `chunking_strategy`). See docs/diarization.md.

Known speakers: `known_speaker_names[]` paired with `known_speaker_references[]` (2-10 s samples, at most
4). Each reference and each found speaker is embedded by the diarizer; the cosine-similarity matrix is
solved as an optimal one-to-one assignment (scipy's `linear_sum_assignment`), and a pair below
TALKIES_SPEAKER_MATCH_THRESHOLD is dropped: that speaker keeps its letter.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio.to_thread
import numpy as np

from talkies.audio.decode import decode_audio
from talkies.engines import engine_class
from talkies.engines.base import ASR_SAMPLE_RATE
from talkies.engines.diarization.protocol import PCM, DiarizationRequest, DiarizationResult, Diarizer
from talkies.errors import (
    ConfigError,
    DiarizationError,
    EngineUnavailableError,
    InvalidAudioError,
    LoadTimeoutError,
    ModelLoadError,
)
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, Registry
from talkies.services.blocking import BlockingSteps
from talkies.services.provider import EngineProvider
from talkies.settings import Settings

MAX_REFERENCES = 4
REFERENCE_SECONDS = (2.0, 10.0)
MAX_SPEAKER_HINT = 32
"""Largest `num_speakers` / `min_speakers` / `max_speakers` a request may give."""
NAME_CHARS = 64


@dataclass(frozen=True, slots=True)
class SpeakerRequest:
    """The diarization fields of a transcription request (already parsed, not yet checked)."""

    references: tuple[bytes, ...] = ()  # known_speaker_references[]: decoded data-URL payloads
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    acoustic: bool = False  # acoustic_diarization=true: diarize a stereo file by voice, not by channel

    @property
    def hinted(self) -> bool:
        return any(v is not None for v in (self.num_speakers, self.min_speakers, self.max_speakers))


def _first_field(speakers: SpeakerRequest) -> str:
    if speakers.references:
        return "known_speaker_references"
    named = [f for f in ("num_speakers", "min_speakers", "max_speakers") if getattr(speakers, f) is not None]
    return named[0] if named else "acoustic_diarization"


def diarizer_slug(registry: Registry, settings: Settings) -> str | None:
    """The enabled diarization model TALKIES_DIARIZATION_MODEL names (a ConfigError when it names another
    kind or an unknown model); empty: the first enabled one; `none` or no such model: None."""
    wanted = settings.diarization_model.strip()
    if wanted.lower() == "none":
        return None
    if not wanted:
        return next((slug for slug, spec in registry.models.items() if spec.kind == "diarization"), None)
    spec = registry.get(wanted)
    if spec is None:
        raise ConfigError(
            f"TALKIES_DIARIZATION_MODEL={wanted!r} is not an enabled model; "
            f"enabled: {', '.join(registry.models)}"
        )
    if spec.kind != "diarization":
        raise ConfigError(f"TALKIES_DIARIZATION_MODEL={wanted!r} is a {spec.kind} model, not diarization")
    return spec.slug


class SpeakerDiarization:
    def __init__(
        self,
        pool: ModelPool,
        registry: Registry,
        settings: Settings,
        engines: EngineProvider | None = None,
    ) -> None:
        self.pool = pool
        self.engines: EngineProvider = engines or pool  # where the diarizer runs (the pool, or Ray Serve)
        self.settings = settings
        self.slug = diarizer_slug(registry, settings)

    @property
    def spec(self) -> ModelSpec | None:
        return self.pool.spec(self.slug) if self.slug else None

    def _engine_attribute(self, name: str, default: Any) -> Any:
        spec = self.spec
        if spec is None:
            return default
        try:
            return getattr(engine_class(spec.executor), name, default)
        except (LookupError, ImportError):
            return default

    def check(self, speakers: SpeakerRequest, names: tuple[str, ...], prompt: str | None, fmt: str) -> None:
        """Everything about the diarization fields that can be refused before the audio is read."""
        wanted = bool(speakers.references) or speakers.hinted or speakers.acoustic
        if wanted and fmt != "diarized_json":
            raise DiarizationError(
                "known_speaker_references[], num_speakers, min_speakers, max_speakers and "
                f"acoustic_diarization "
                f"need response_format=diarized_json (got {fmt})",
                param="response_format",
            )
        if fmt == "diarized_json" and prompt:
            raise DiarizationError(
                "Prompt is not supported for diarization (response_format=diarized_json)", param="prompt"
            )
        if wanted and self.slug is None:
            raise DiarizationError(
                "acoustic speaker diarization is off on this server: no diarization model is enabled "
                "(TALKIES_DIARIZATION_MODEL, docs/diarization.md), so speakers are the file's channels",
                param=_first_field(speakers),
            )
        self._check_hints(speakers)
        if speakers.references:
            self._check_references(speakers, names)

    def _check_hints(self, speakers: SpeakerRequest) -> None:
        for field in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(speakers, field)
            if value is not None and not 1 <= value <= MAX_SPEAKER_HINT:
                raise DiarizationError(
                    f"{field} must be between 1 and {MAX_SPEAKER_HINT}, got {value}", param=field
                )
        low, high, exact = speakers.min_speakers, speakers.max_speakers, speakers.num_speakers
        if low is not None and high is not None and low > high:
            raise DiarizationError(
                f"min_speakers ({low}) is more than max_speakers ({high})", param="min_speakers"
            )
        if exact is not None and (low is not None or high is not None):
            raise DiarizationError(
                "give num_speakers or min_speakers / max_speakers, not both", param="num_speakers"
            )
        limit = self._engine_attribute("max_speakers", None)
        asked = exact or low
        if limit is not None and asked is not None and asked > limit:
            raise DiarizationError(
                f"diarization model {self.slug!r} tells apart at most {limit} speakers (asked for {asked})",
                param="num_speakers" if exact else "min_speakers",
            )

    def _check_references(self, speakers: SpeakerRequest, names: tuple[str, ...]) -> None:
        references = speakers.references
        if len(references) > MAX_REFERENCES:
            raise DiarizationError(
                f"known_speaker_references[] takes at most {MAX_REFERENCES} samples (got {len(references)})",
                param="known_speaker_references",
            )
        if len(names) != len(references):
            raise DiarizationError(
                f"known_speaker_names[] and known_speaker_references[] must pair up one to one (got "
                f"{len(names)} names and {len(references)} references)",
                param="known_speaker_names",
            )
        if len(set(names)) != len(names):
            raise DiarizationError(
                f"known_speaker_names[] must be distinct (got {', '.join(names)})",
                param="known_speaker_names",
            )
        for name in names:
            if not name.isprintable() or len(name) > NAME_CHARS:
                raise DiarizationError(
                    f"known_speaker_names[] must be printable text of at most {NAME_CHARS} characters "
                    f"(got {name!r})",
                    param="known_speaker_names",
                )
        if not self._engine_attribute("embeds_speakers", False):
            raise DiarizationError(
                f"diarization model {self.slug!r} cannot match voices, so known_speaker_references[] "
                "cannot be used with it; choose an embedding diarizer (sherpa_diarization) in "
                "TALKIES_DIARIZATION_MODEL",
                param="known_speaker_references",
            )

    def acoustic(
        self, speakers: SpeakerRequest, names: tuple[str, ...], channels: int, by_channel: bool
    ) -> bool:
        """Whether a `diarized_json` file of `channels` channels is diarized by voice."""
        if self.slug is None or by_channel:
            if speakers.references and by_channel:
                raise DiarizationError(
                    "known_speaker_references[] need acoustic diarization, not diarization=true (channels)",
                    param="known_speaker_references",
                )
            return False
        if channels == 1 or speakers.acoustic:
            if names and not speakers.references:
                raise DiarizationError(
                    "a file diarized by voice names its speakers by sample: pair each known_speaker_names[] "
                    "entry with a known_speaker_references[] sample",
                    param="known_speaker_references",
                )
            return True
        if speakers.references or speakers.hinted:
            raise DiarizationError(
                f"this file has {channels} channels, which are its speakers; to diarize it by voice "
                "(known_speaker_references[], speaker counts) set acoustic_diarization=true",
                param="acoustic_diarization",
            )
        return False

    async def references(self, speakers: SpeakerRequest) -> tuple[PCM, ...]:
        return tuple(
            [
                await anyio.to_thread.run_sync(self._decode_reference, index, data)
                for index, data in enumerate(speakers.references)
            ]
        )

    def _decode_reference(self, index: int, data: bytes) -> PCM:
        low, high = REFERENCE_SECONDS
        self.settings.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-ref-", dir=self.settings.upload_tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            try:
                pcm = decode_audio(Path(name), sample_rate=ASR_SAMPLE_RATE, max_seconds=high + 1.0)
            except InvalidAudioError as exc:
                raise DiarizationError(
                    f"known_speaker_references[{index}] is not audio in a supported format, "
                    f"or is over {high:g} s "
                    f"({exc.message})",
                    param="known_speaker_references",
                ) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        seconds = len(pcm) / ASR_SAMPLE_RATE
        if not low <= seconds <= high:
            raise DiarizationError(
                f"known_speaker_references[{index}] is {seconds:.1f} s; "
                f"each sample must be {low:g}-{high:g} s",
                param="known_speaker_references",
            )
        return pcm

    async def diarize(
        self, pcm: PCM, speakers: SpeakerRequest, references: tuple[PCM, ...]
    ) -> DiarizationResult:
        assert self.slug is not None
        request = DiarizationRequest(
            audio=pcm,
            num_speakers=speakers.num_speakers,
            min_speakers=speakers.min_speakers,
            max_speakers=speakers.max_speakers,
            references=references,
        )
        try:
            async with self.engines.acquire(self.slug) as engine:
                return await BlockingSteps().run(cast(Diarizer, engine).diarize, request)
        except LoadTimeoutError:
            raise
        except (EngineUnavailableError, ModelLoadError) as exc:
            raise type(exc)(f"{exc.message}. {self._ways_out()}", param=exc.param) from exc

    def _ways_out(self) -> str:
        """What a 503 for a diarizer that cannot load adds: `diarized_json` on mono audio needs it (with the
        shipped registries it is on by default, so a server without its snapshot lands here) and the two
        ways out."""
        get = f"`talkies pull {self.slug}`"
        spec = self.spec
        if spec is not None and spec.executor == "sherpa_diarization":
            get += (
                f", or without the hub `python scripts/diarization_snapshot.py "
                f"$TALKIES_DATA_DIR/models/{self.slug}`"
            )
        return (
            f"diarized_json on a mono file (or with acoustic_diarization=true) needs the diarization model "
            f"{self.slug!r}: get it ({get}; docs/diarization.md), or set TALKIES_DIARIZATION_MODEL=none to "
            "answer one speaker per channel instead (a mono file: one speaker A)"
        )

    def names(self, result: DiarizationResult, names: tuple[str, ...]) -> dict[int, str]:
        return match_known_speakers(
            result.speaker_embeddings,
            result.reference_embeddings,
            names,
            self.settings.speaker_match_threshold,
        )


def match_known_speakers(
    speakers: dict[int, list[float]], references: list[list[float]], names: tuple[str, ...], threshold: float
) -> dict[int, str]:
    """speaker -> name: the optimal one-to-one assignment on cosine similarity; pairs under `threshold`
    are dropped."""
    if not speakers or not references:
        return {}
    from scipy.optimize import linear_sum_assignment

    ids = sorted(speakers)
    found = _unit(np.array([speakers[i] for i in ids], dtype=np.float64))
    refs = _unit(np.array(references, dtype=np.float64))
    similarity = found @ refs.T
    rows, cols = linear_sum_assignment(-similarity)
    return {ids[r]: names[c] for r, c in zip(rows, cols, strict=True) if similarity[r, c] >= threshold}


def _unit(vectors: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
