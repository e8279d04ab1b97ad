"""What the Wyoming server offers and how a Wyoming request names it: the `info` event (`describe`), the
default model of a kind, and a Wyoming voice {name, language, speaker} -> (model, voice).

Everything here reads the disk (snapshots), the import system (extras) or engine catalogs (voices), so a
connection calls it through `asyncio.to_thread`, never on the event loop."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from talkies import __version__
from talkies.engines.base import Modality
from talkies.errors import BadRequestError

if TYPE_CHECKING:
    from talkies.pool import ModelPool
    from talkies.registry import Registry
    from talkies.services.speech import SpeechService
    from talkies.settings import Settings

_TALKIES = {"name": "talkies", "url": ""}


class WyomingCatalog:
    def __init__(self, registry: Registry, pool: ModelPool, speech: SpeechService, settings: Settings):
        self.registry = registry
        self.pool = pool
        self.speech = speech
        self.settings = settings

    def default_model(self, modality: Modality) -> str:
        """The model a request without a name uses: TALKIES_DEFAULT_*_MODEL, else the first installed model
        of that kind, else the registry's first (the same rule as an empty `model` over HTTP)."""
        spec = self.registry.default(modality)
        if spec is None:
            kind = "speech-to-text" if modality == "asr" else "text-to-speech"
            raise BadRequestError(f"no {kind} model is enabled on this server")
        return spec.slug

    def resolve_voice(self, voice: Any) -> tuple[str, str | None]:
        """(model, voice) from a Wyoming voice {name, language, speaker}. Names are `<model>/<voice>`; a
        bare model name takes its default voice; a bare voice is looked up in every TTS model."""
        voice = voice if isinstance(voice, dict) else {}
        if voice.get("speaker"):
            raise BadRequestError(
                "voice speakers are not used by talkies: every speaker is a voice of its own, "
                "name it as <model>/<voice> (see `describe`)"
            )
        name = str(voice.get("name") or "").strip()
        models = self.registry.models
        if name:
            model, slash, rest = name.partition("/")
            if slash and model in models:
                return model, rest
            if name in models:
                return name, None
            for entry in self.speech.voices():
                if entry.voice == name:
                    return entry.model, name
            raise BadRequestError(f"unknown voice {name!r}; name voices as <model>/<voice> (see `describe`)")
        language = str(voice.get("language") or "").strip().lower()
        if language:
            entries = self.speech.voices()
            base = language.split("-")[0]
            for exact in (True, False):  # "en-us" first, then any "en-*"
                for entry in entries:
                    langs = [lang.lower() for lang in entry.languages]
                    if (language in langs) if exact else any(lang.split("-")[0] == base for lang in langs):
                        return entry.model, entry.voice
            raise BadRequestError(f"no voice speaks language {language!r}")
        return self.default_model("tts"), None

    def describe(self) -> dict[str, Any]:
        """The `info` event's data: rebuilt on every call."""
        from talkies.engines import engine_class, model_installed

        asr_models = []
        for slug, spec in self.registry.models.items():
            if spec.kind != "asr":
                continue
            languages = list(spec.languages)
            if not languages and spec.default_source_lang:
                languages = [spec.default_source_lang]
            if not languages:
                with contextlib.suppress(LookupError, ImportError):
                    languages = list(getattr(engine_class(spec.executor), "supported_languages", ()))
            asr_models.append(
                {
                    "name": slug,
                    "attribution": _attribution(spec.repo, spec.executor),
                    "installed": model_installed(spec, self.pool.device, self.settings.models_dir),
                    "description": spec.description or f"{slug} ({spec.executor})",
                    "version": __version__,
                    "languages": languages,
                }
            )
        voices = []
        for entry in self.speech.voices():
            voices.append(
                {
                    "name": f"{entry.model}/{entry.voice}",
                    "attribution": _attribution(self.registry.models[entry.model].repo, entry.model),
                    "installed": True,
                    "description": f"{entry.voice} ({entry.model})",
                    "version": __version__,
                    "languages": list(entry.languages),
                    "speakers": None,
                }
            )
        program = {"attribution": _TALKIES, "installed": True, "version": __version__}
        return {
            "asr": [
                {
                    **program,
                    "name": "talkies-asr",
                    "description": "talkies speech-to-text",
                    "models": asr_models,
                    "supports_transcript_streaming": True,
                    "requires_external_vad": True,
                    "prefers_auto_gain_enabled": True,
                    "prefers_noise_reduction_enabled": True,
                }
            ],
            "tts": [
                {
                    **program,
                    "name": "talkies-tts",
                    "description": "talkies text-to-speech",
                    "voices": voices,
                    "supports_synthesize_streaming": True,
                }
            ],
            "handle": [],
            "intent": [],
            "wake": [],
            "mic": [],
            "snd": [],
        }


def _attribution(repo: str | None, fallback: str) -> dict[str, str]:
    """Who made a model: its hub repository when it has one (Home Assistant shows this)."""
    if repo:
        return {"name": repo.split("/")[0], "url": f"https://huggingface.co/{repo}"}
    return {"name": fallback, "url": ""}
