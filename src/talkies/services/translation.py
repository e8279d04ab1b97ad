"""Translation to English (OpenAI's `/v1/audio/translations`): transcription with task="translate".

Which models can translate is asked without loading anything: a resident engine answers for itself;
otherwise its class does (`can_translate`), refined by the class's optional `spec_can_translate(spec)`
(from the registry entry: a Canary entry listing only English cannot) and
`snapshot_can_translate(model_dir)` when the model's files are on disk (an English-only Whisper is told
apart by its vocabulary). A model that cannot translate is refused before the audio is decoded, with the
list of models that can.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from talkies.engines import engine_class
from talkies.errors import CapabilityError
from talkies.registry import ModelSpec
from talkies.services.transcription import Transcript, TranscriptionOptions, TranscriptionService


class TranslationService:
    def __init__(self, transcription: TranscriptionService) -> None:
        self.transcription = transcription
        self.pool = transcription.pool

    def can_translate(self, spec: ModelSpec) -> bool:
        if spec.kind != "asr":
            return False
        engine = self.pool.peek_engine(spec.slug)
        known = getattr(engine, "can_translate", None) if engine is not None else None
        if isinstance(known, bool):
            return known
        try:
            cls = engine_class(spec.executor)
        except (LookupError, ImportError):
            return False
        from_spec = getattr(cls, "spec_can_translate", None)
        if from_spec is not None:
            by_entry = from_spec(spec)
            if isinstance(by_entry, bool):
                return by_entry
        from_snapshot = getattr(cls, "snapshot_can_translate", None)
        if from_snapshot is not None:
            answer = from_snapshot(self.pool.engine_context(spec).model_dir)
            if isinstance(answer, bool):
                return answer
        return getattr(cls, "can_translate", False) is True

    def translators(self) -> list[str]:
        """Slugs of the enabled models that can translate, in registry order."""
        return [slug for slug, spec in self.transcription.registry.models.items() if self.can_translate(spec)]

    def validate(self, options: TranscriptionOptions) -> TranscriptionOptions:
        """Refuse what can be refused without the audio; returns the options with task="translate"."""
        options = replace(options, task="translate")
        spec = self.pool.spec(options.model, kind="asr")
        if spec.kind == "asr" and not self.can_translate(spec):
            raise self._refusal(spec.slug)
        self.transcription.validate(options)  # modality, response format, language
        return options

    async def translate_file(self, path: Path, options: TranscriptionOptions) -> Transcript:
        """Translate `path`; `options` come from `validate()` (call it first, before fetching the audio)."""
        options = replace(options, task="translate")
        try:
            return await self.transcription.transcribe_file(path, options)
        except CapabilityError as exc:
            # The engine found out only once loaded (e.g. a snapshot downloaded by this very request).
            raise self._refusal(self.pool.spec(options.model, kind="asr").slug) from exc

    def _refusal(self, slug: str) -> CapabilityError:
        able = self.translators()
        which = f"models that can: {', '.join(able)}" if able else "no enabled model can translate"
        return CapabilityError(f"model {slug!r} cannot translate to English; {which}", param="model")
