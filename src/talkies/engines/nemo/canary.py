"""The `canary_multitask` executor: NeMo EncDecMultiTaskModel (Canary-1B-Flash, Canary-180M-Flash, ...).

Canary decodes from a prompt: source language, target language, (canary v1) task, punctuation. This
engine builds it from the registry entry and the request:

- source: the request's `language`, else the entry's `default_source_lang`, else "en";
- target: `/v1/audio/translations` -> "en"; an entry with `default_task: s2t_translation` -> its
  `default_target_lang`; otherwise the source (transcription);
- task: translation when source and target differ.

Several slugs on one repository (e.g. `canary-1b-flash` and `canary-1b-flash-de2en`) share one loaded copy
of the weights (`share_weights`): each slug only changes the prompt. Languages are the ones the model's
tokenizer has a token for, narrowed to the entry's `languages` when it lists them; the translations
endpoint needs a model with a language other than English.

Canary has no alignment output here: each decoded VAD region (or the whole clip) becomes one segment
spanning that region, with no word timestamps.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

from talkies.engines.base import ASR_SAMPLE_RATE, Segment, TranscriptionRequest, TranscriptionResult
from talkies.engines.nemo.base import PCM, NemoEngine
from talkies.errors import CapabilityError, ModelLoadError
from talkies.registry.schema import ModelSpec

_SLOT_DEFAULTS = {
    "pnc": "yes",
    "itn": "no",
    "timestamp": "no",
    "diarize": "no",
    "decodercontext": "",
    "emotion": "<|emo:undefined|>",
}


class CanaryEngine(NemoEngine):
    """Transcriber (and translator) on a Canary multitask checkpoint (see the module docstring)."""

    share_weights = True
    can_translate = True  # refined per entry (`spec_can_translate`) and, once loaded, by the tokenizer

    @staticmethod
    def spec_can_translate(spec: ModelSpec) -> bool | None:
        """Whether the translations endpoint can use `spec`, from its registry entry alone."""
        if spec.default_task == "s2t_translation":
            return True
        if spec.languages:
            return any(lang != "en" for lang in spec.languages)
        return None  # the tokenizer decides once loaded

    def _loaded(self, model: Any) -> None:
        super()._loaded(model)
        known = _tokenizer_languages(model.model)
        if self.spec.languages:
            unknown = [lang for lang in self.spec.languages if known and lang not in known]
            if unknown:
                raise ModelLoadError(
                    f"model {self.spec.slug!r}: the registry lists languages {', '.join(unknown)} that the "
                    f"checkpoint has no token for; it knows {', '.join(known)}"
                )
            self.languages = self.spec.languages
        else:
            self.languages = known
        by_spec = self.spec_can_translate(self.spec)
        self.can_translate = by_spec if by_spec is not None else any(lang != "en" for lang in known)
        for code in (self.spec.default_source_lang, self.spec.default_target_lang):
            if code and known and code not in known:
                raise ModelLoadError(
                    f"model {self.spec.slug!r}: default language {code!r} is not one the checkpoint knows "
                    f"({', '.join(known)})"
                )

    def prompt(self, request: TranscriptionRequest, model: Any) -> dict[str, str]:
        source = self.validate_language(request.language) or self.spec.default_source_lang or "en"
        if request.task == "translate":
            if not self.can_translate:
                raise CapabilityError(f"model {self.spec.slug!r} cannot translate", param="model")
            target = "en"
        elif self.spec.default_task == "s2t_translation":
            target = self.spec.default_target_lang or "en"
        else:
            target = source
        values = {
            **_SLOT_DEFAULTS,
            "source_lang": source,
            "target_lang": target,
            "task": "asr" if source == target else "s2t_translation",
        }
        slots = model.prompt.get_slots("user")
        return {name: values[name] for name in slots if name in values}

    def decode_clips(self, key: Hashable, clips: list[PCM], batch_size: int) -> list[Any]:
        """Clips with one prompt (`key`: its sorted items) in one `transcribe()`."""
        from nemo.collections.asr.models.aed_multitask_models import MultiTaskTranscriptionConfig

        prompt = dict(cast("tuple[tuple[str, str], ...]", key))
        config = MultiTaskTranscriptionConfig(
            batch_size=batch_size,
            return_hypotheses=True,
            verbose=False,
            enable_chunking=False,  # the server's VAD regions are the chunks
            prompt=prompt,
        )
        with self.running() as model:
            return list(model.transcribe(clips, override_config=config))

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        duration = len(request.audio) / ASR_SAMPLE_RATE
        clips = self.cut_regions(request.audio, request.regions)
        prompt = self.prompt(request, self.require_model().model)  # reads the prompt format only
        if not clips:
            return TranscriptionResult(text="", language=prompt["source_lang"], duration=duration)
        hypotheses = self.decode(tuple(sorted(prompt.items())), [clip for _, clip in clips])
        segments = []
        for (region, _), hypothesis in zip(clips, hypotheses, strict=True):
            text = str(getattr(hypothesis, "text", hypothesis) or "").strip()
            if text:
                segments.append(Segment(start=region.start, end=min(region.end, duration), text=text))
        return TranscriptionResult(
            text=" ".join(s.text for s in segments),
            language=prompt["source_lang"],
            duration=duration,
            segments=segments,
        )


def _tokenizer_languages(model: Any) -> tuple[str, ...]:
    langs = getattr(model.tokenizer, "langs", None) or []
    return tuple(str(lang) for lang in langs if lang != "spl_tokens")
