"""The `qwen3_tts` executor: one engine for Qwen3-TTS's three checkpoint shapes.

The registry's `qwen3_mode` decides what `voice` and `instructions` mean (the snapshot's `tts_model_type`
is checked at load; a mismatch is logged and the registry wins):

* `base`: `voice` names a reference WAV under the voice directories (`talkies.engines.qwen3.voices`); with
  its `.txt` transcript the model clones in context (ICL), without it from the speaker x-vector only (a
  warning is logged). The language is the voice's `.lang`, else the request's, else English.
  `instructions` is passed as the style prompt.
* `custom_voice`: `voice` is one of the preset speakers (case-insensitive). `instructions` is the emotion /
  style prompt on 1.7B checkpoints; the 0.6B CustomVoice checkpoint has no instruction input, so it is
  accepted and dropped there (logged).
* `voice_design`: `instructions` describes the voice and is required; `voice` is ignored (catalog: `design`).

Every request also takes the sampling knobs (`temperature`, `top_k`, `top_p`, `repetition_penalty`,
`max_new_tokens`, `do_sample`; ranges are checked by the API). `speed` is accepted and ignored: Qwen3-TTS
has no rate control. All request checks (`check_voice`, `check_request`) read only the voice directories
and the snapshot's config.json, so they run before the model is loaded.

Runtime: faster-qwen3-tts (CUDA graphs, warmed up inside `load()`) on CUDA, the qwen-tts transformers
implementation elsewhere (`talkies.engines.qwen3.runtime`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from talkies.engines.base import AudioChunk, EngineContext, SpeechRequest, Voice
from talkies.engines.common import SnapshotEngine
from talkies.engines.qwen3.voices import (
    DESIGN_VOICE,
    LANGUAGES,
    PRESET_SPEAKERS,
    ReferenceVoice,
    canonical_language,
    scan_voices,
)
from talkies.errors import (
    BadRequestError,
    EngineUnavailableError,
    UnknownVoiceError,
    UnsupportedLanguageError,
)

if TYPE_CHECKING:
    from talkies.engines.qwen3.runtime import Job, Reference
    from talkies.registry.schema import ModelSpec

log = logging.getLogger(__name__)

SAMPLING_KNOBS = frozenset(
    {"temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens", "do_sample"}
)
DEFAULT_LANGUAGE = "English"


class Qwen3Engine(SnapshotEngine):
    """Implements `Synthesizer` for the three Qwen3-TTS modes."""

    required_files = ("config.json", "speech_tokenizer/config.json")

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        super().__init__(spec, context)
        self.mode: str = spec.qwen3_mode or "base"
        options = context.options
        builtin = options.get("qwen3_voices_dir")
        custom = options.get("custom_voices_dir")
        self.builtin_dir = Path(str(builtin)) if builtin else None
        self.custom_dir = Path(str(custom)) if custom else None
        self._lock = threading.Lock()
        self._config_cache: tuple[float, dict[str, Any]] | None = None

    # -- catalog (no weights needed) ---------------------------------------------------------------------
    def reference_voices(self) -> dict[str, ReferenceVoice]:
        return scan_voices(self.builtin_dir, self.custom_dir)

    def voices(self) -> list[Voice]:
        if self.mode == "voice_design":
            return [Voice(name=DESIGN_VOICE, default=True, origin="builtin")]
        if self.mode == "custom_voice":
            names = self.speakers()
            default = self._pick_default(names)
            return [Voice(name=n, default=n == default, origin="builtin") for n in names]
        references = self.reference_voices()
        default = self._pick_default(list(references))
        return [Voice(name=n, default=n == default, origin=v.origin) for n, v in references.items()]

    def _pick_default(self, names: list[str]) -> str | None:
        wanted = self.spec.default_voice
        if wanted:
            for name in names:
                if name.lower() == wanted.lower():
                    return name
        return names[0] if names else None

    def speakers(self) -> list[str]:
        """The checkpoint's preset speakers (from its config.json; the contract's nine before download)."""
        configured = self._talker_config().get("spk_id")
        if not isinstance(configured, dict) or not configured:
            return list(PRESET_SPEAKERS)
        canonical = {name.lower(): name for name in PRESET_SPEAKERS}
        return sorted(
            (canonical.get(str(n).lower(), str(n)) for n in configured),
            key=lambda n: (PRESET_SPEAKERS.index(n) if n in PRESET_SPEAKERS else len(PRESET_SPEAKERS), n),
        )

    def languages(self) -> list[str]:
        configured = self._talker_config().get("codec_language_id")
        if not isinstance(configured, dict) or not configured:
            return list(LANGUAGES)
        return ["Auto"] + [canonical_language(str(k)) for k in configured if "dialect" not in str(k)]

    def check_voice(self, voice: str) -> None:
        if self.mode == "voice_design":
            return  # ignored: the voice comes from `instructions`
        if self.mode == "custom_voice":
            self._speaker(voice)
            return
        references = self.reference_voices()
        if not references:
            raise EngineUnavailableError(
                f"model {self.spec.slug!r} clones reference voices and none are on disk: add a .wav (and its "
                f".txt transcript) under {self.custom_dir} or {self.builtin_dir}, or POST /v1/audio/voices"
            )
        if voice not in references:
            raise UnknownVoiceError(
                f"voice {voice!r} is not available for model {self.spec.slug!r}; "
                f"voices: {', '.join(references)}",
                param="voice",
            )

    def check_request(self, request: SpeechRequest) -> None:
        """Refusals that need no weights: missing design instructions, unknown language or option."""
        unknown = sorted(set(request.options) - SAMPLING_KNOBS)
        if unknown:
            raise BadRequestError(
                f"model {self.spec.slug!r} does not take {', '.join(unknown)}", param=unknown[0]
            )
        if self.mode == "voice_design" and not (request.instructions or "").strip():
            raise BadRequestError(
                f"model {self.spec.slug!r} designs a voice from 'instructions': describe the voice there "
                "(e.g. 'A warm, friendly young female voice')",
                param="instructions",
            )
        if request.language:
            self._language(request.language)

    def _speaker(self, voice: str) -> str:
        names = self.speakers()
        for name in names:
            if name.lower() == voice.strip().lower():
                return name
        raise UnknownVoiceError(
            f"voice {voice!r} is not a speaker of model {self.spec.slug!r}; speakers: {', '.join(names)}",
            param="voice",
        )

    def _language(self, value: str) -> str:
        language = canonical_language(value)
        known = self.languages()
        if language.lower() not in {k.lower() for k in known}:
            raise UnsupportedLanguageError(
                f"language {value!r} is not spoken by model {self.spec.slug!r}; "
                f"languages: {', '.join(known)}",
                param="language",
            )
        return language

    def _config(self) -> dict[str, Any]:
        path = self.context.model_dir / "config.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return {}
        if self._config_cache is None or self._config_cache[0] != mtime:
            try:
                self._config_cache = (mtime, json.loads(path.read_text()))
            except (OSError, ValueError):
                return {}
        return self._config_cache[1]

    def _talker_config(self) -> dict[str, Any]:
        talker = self._config().get("talker_config")
        return talker if isinstance(talker, dict) else {}

    # -- lifecycle --------------------------------------------------------------------------------------
    def _load(self, model_dir: Path) -> Any:
        checkpoint = self._config().get("tts_model_type")
        if checkpoint and checkpoint != self.mode:
            log.warning(
                "model %s: the registry says qwen3_mode=%s but the checkpoint's tts_model_type is %s; "
                "serving it as %s (fix qwen3_mode in the registry if that is wrong)",
                self.spec.slug, self.mode, checkpoint, self.mode,
            )  # fmt: skip
        device = self.context.device
        started = time.monotonic()
        runtime: Any
        if device.startswith("cuda"):
            from talkies.engines.qwen3.runtime import FasterRuntime

            try:
                import faster_qwen3_tts  # noqa: F401
            except ImportError:
                raise EngineUnavailableError(
                    f"model {self.spec.slug!r} on CUDA needs faster-qwen3-tts (pip install 'talkies[cuda]')"
                ) from None
            runtime = FasterRuntime(model_dir, device)
        else:
            import torch

            from talkies.engines.qwen3.runtime import TransformersRuntime

            if self.context.cpu_threads:
                torch.set_num_threads(self.context.cpu_threads)
            runtime = TransformersRuntime(model_dir, device)
        log.info(
            "model %s loaded (%s mode, %s runtime on %s) in %.1f s",
            self.spec.slug, self.mode, type(runtime).__name__, device, time.monotonic() - started,
        )  # fmt: skip
        return runtime

    def _unloaded(self) -> None:
        self._config_cache = None

    # -- synthesis --------------------------------------------------------------------------------------
    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        runtime = self.require_model()
        job = self._job(request)
        stop = threading.Event()
        started = time.monotonic()
        with self._lock:
            for pcm in runtime.stream(job, stop):
                if len(pcm):
                    yield AudioChunk(pcm=pcm, sample_rate=runtime.sample_rate)
            progress = runtime.progress
        log.info(
            "model %s: %d codec frames in %.1f s (%s mode, %s, %s%s)",
            self.spec.slug, progress.frames, time.monotonic() - started, self.mode, job.language,
            "with instructions" if job.instruct else "no instructions",
            ", stopped early: client gone" if progress.stopped else "",
        )  # fmt: skip

    def _job(self, request: SpeechRequest) -> Job:
        from talkies.engines.qwen3.runtime import Job

        self.check_request(request)
        if request.speed != 1.0:
            log.info("model %s: speed %s ignored (no rate control)", self.spec.slug, request.speed)
        instruct = (request.instructions or "").strip() or None
        sampling = {k: v for k, v in request.options.items() if k in SAMPLING_KNOBS}
        if self.mode == "base":
            self.check_voice(request.voice)
            voice = self.reference_voices()[request.voice]
            spoken = voice.language() or request.language or DEFAULT_LANGUAGE
            return Job(
                mode="base",
                text=request.text,
                language=self._language(spoken),
                instruct=instruct,
                reference=self._reference(voice),
                sampling=sampling,
            )
        language = self._language(request.language or DEFAULT_LANGUAGE)
        if self.mode == "custom_voice":
            if instruct and str(self._config().get("tts_model_size", "")) == "0b6":
                log.info("model %s: instructions dropped (0.6B CustomVoice takes none)", self.spec.slug)
                instruct = None
            speaker = self._speaker(request.voice)
            return Job(
                "custom_voice", request.text, language, speaker=speaker, instruct=instruct, sampling=sampling
            )
        return Job("voice_design", request.text, language, instruct=instruct, sampling=sampling)

    def _reference(self, voice: ReferenceVoice) -> Reference:
        from talkies.audio.decode import decode_audio
        from talkies.engines.qwen3.runtime import Reference

        transcript = voice.transcript()
        if transcript is None:
            log.warning(
                "voice %r has no transcript (%s missing or empty): x-vector-only cloning, lower fidelity; "
                "add the transcript for in-context cloning",
                voice.name, voice.transcript_path.name,
            )  # fmt: skip
        else:
            log.info("voice %r: in-context cloning with its transcript", voice.name)
        info = voice.wav.stat()
        audio = decode_audio(voice.wav, sample_rate=24_000)
        return Reference(
            key=(str(voice.wav), info.st_mtime_ns, info.st_size, transcript),
            wav=voice.wav,
            audio=audio,
            transcript=transcript,
        )
