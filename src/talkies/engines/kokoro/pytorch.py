"""`kokoro` executor: Kokoro-82M on PyTorch through the `kokoro` package, with misaki G2P.

Snapshot (hexgrad/Kokoro-82M, flat under $TALKIES_DATA_DIR/models/<slug>/)::

    config.json        architecture + phoneme vocabulary
    kokoro-v1_0.pth    weights (any kokoro-v*.pth)
    voices/<name>.pt   one style pack per voice, tensor [510, 1, 256]

One shared `KModel` and one `KPipeline` per language in the catalog, all built from local paths: nothing
is fetched at run time. misaki's English G2P wants spaCy's `en_core_web_sm`, which is not on PyPI and
which misaki would download on first use; when it is missing we give misaki a blank English spaCy
pipeline instead (lexicon + espeak fallback still work; only POS-dependent homographs suffer), log one
warning at load, and keep serving.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from talkies.engines.kokoro.base import KokoroBase
from talkies.engines.kokoro.voices import KokoroLanguage
from talkies.engines.snapshot import ensure_snapshot
from talkies.errors import EngineUnavailableError
from talkies.registry.schema import EXECUTORS

if TYPE_CHECKING:
    from talkies.engines.base import EngineContext
    from talkies.registry import ModelSpec

log = logging.getLogger(__name__)

ALLOW_PATTERNS = EXECUTORS["kokoro"].snapshot_patterns  # the schema's list, which `talkies pull` reads
SPACY_MODEL = "en_core_web_sm"
HUB_REPO = "hexgrad/Kokoro-82M"  # only names the model family for the kokoro package; never contacted


class KokoroEngine(KokoroBase):
    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        super().__init__(spec, context)
        self._model: Any = None
        self._pipelines: dict[str, Any] = {}

    # -- catalog (no heavy imports) ----------------------------------------------------------------
    def _present_voices(self) -> list[str] | None:
        if not self.context.model_dir.is_dir():
            return None
        return sorted(p.stem for p in (self.context.model_dir / "voices").glob("*.pt"))

    def _g2p_languages(self) -> set[str]:
        have = {m for m in ("misaki", "spacy", "phonemizer", "espeakng_loader") if _installed(m)}
        langs: set[str] = set()
        if {"misaki", "spacy"} <= have:
            langs |= {"a", "b"}
        if {"misaki", "phonemizer", "espeakng_loader"} <= have:
            langs |= {"e", "f", "h", "i", "p"}
        return langs

    # -- lifecycle ---------------------------------------------------------------------------------
    def load(self) -> None:
        model_dir = ensure_snapshot(self.spec.slug, self.spec.repo, self.context.model_dir,
                                    allow_patterns=ALLOW_PATTERNS)  # fmt: skip
        config = model_dir / "config.json"
        weights = sorted(model_dir.glob("kokoro-v*.pth")) or sorted(model_dir.glob("*.pth"))
        if not config.is_file() or not weights:
            raise EngineUnavailableError(
                f"model {self.spec.slug!r}: {model_dir} needs config.json and kokoro-v*.pth "
                "(the hexgrad/Kokoro-82M layout)"
            )
        with _hub_offline():
            import torch
            from kokoro import KModel, KPipeline
            from loguru import logger as loguru_logger

            loguru_logger.disable("kokoro")  # its per-pipeline chatter goes to stderr, not our logs
            if self.context.cpu_threads > 0:
                torch.set_num_threads(self.context.cpu_threads)
            device = self.context.device
            model = KModel(repo_id=HUB_REPO, config=str(config), model=str(weights[-1])).to(device).eval()
            pipelines: dict[str, Any] = {}
            languages = self._languages_in_catalog()
            english = any(lang.code in "ab" for lang in languages)
            with _english_g2p_offline() if english else contextlib.nullcontext():
                for language in languages:
                    pipelines[language.code] = KPipeline(
                        lang_code=language.code, repo_id=HUB_REPO, model=model
                    )
        self._model, self._pipelines = model, pipelines
        self._loaded = True
        log.info("kokoro %s loaded on %s with pipelines %s", self.spec.slug, device, ",".join(pipelines))

    def unload(self) -> None:
        on_cuda = self.context.device.startswith("cuda")
        self._loaded = False
        self._model = None
        self._pipelines = {}
        self._styles = {}
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    # -- synthesis ---------------------------------------------------------------------------------
    def _read_style(self, name: str) -> Any:
        import torch

        path = self.context.model_dir / "voices" / f"{name}.pt"
        # Kept on the CPU: KPipeline only accepts CPU FloatTensors as a voice; KModel moves the row it uses.
        return torch.load(path, map_location="cpu", weights_only=True).float()

    def _synthesize_chunk(
        self, text: str, language: KokoroLanguage, style: Any, speed: float
    ) -> Iterator[Any]:
        pipeline = self._pipelines[language.code]
        for result in pipeline(text, voice=style, speed=speed, split_pattern=None):
            if result.audio is not None:
                yield result.audio


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE for the duration: every file comes from the snapshot, a hub call fails fast."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


@contextlib.contextmanager
def _english_g2p_offline() -> Iterator[None]:
    """Stop misaki from downloading spaCy's English model: hand it a blank English pipeline instead."""
    spacy: Any = importlib.import_module("spacy")
    spacy_util: Any = importlib.import_module("spacy.util")
    spacy_cli: Any = importlib.import_module("spacy.cli")
    if spacy_util.is_package(SPACY_MODEL):
        yield
        return
    log.warning(
        "spaCy model %s is not installed: English G2P uses a blank spaCy pipeline (no POS tags, so some "
        "homographs may be mispronounced); `pip install %s` from a wheel to improve it",
        SPACY_MODEL,
        SPACY_MODEL,
    )
    blank = spacy.blank("en")
    is_package, load, download = spacy_util.is_package, spacy.load, spacy_cli.download

    def refuse_download(*args: object, **kwargs: object) -> None:
        raise EngineUnavailableError(f"refusing to download spaCy model {args[:1]} at run time")

    spacy_util.is_package = lambda name: name == SPACY_MODEL or is_package(name)
    spacy.load = lambda name, *a, **kw: blank if name == SPACY_MODEL else load(name, *a, **kw)
    spacy_cli.download = refuse_download
    try:
        yield
    finally:
        spacy_util.is_package, spacy.load, spacy_cli.download = is_package, load, download
