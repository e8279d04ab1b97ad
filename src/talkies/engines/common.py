"""The lifecycle every snapshot-backed engine shares, written once.

    class MyEngine(SnapshotEngine):
        snapshot_patterns = ("*.nemo",)      # what `talkies pull` / ensure_snapshot fetch
        required_files = ("*.nemo",)         # globs that must match in the snapshot before load
        def _load(self, model_dir: Path) -> Any: ...   # heavy imports and weights; returns the model

`load()` finds (or fetches) `$TALKIES_DATA_DIR/models/<slug>/`, checks the required files with one clear
error naming what is missing, and keeps what `_load` returns in `self.model`. `unload()` drops it, lets a
subclass free more (`_unloaded`), and gives memory back (gc, CUDA cache). Construction stays cheap: no
heavy import, no file access, so catalogs and validation can build an engine without loading it.

Shared weights: an engine class with `share_weights = True` loads through `SHARED_WEIGHTS`, a refcounted
cache keyed by `weights_key()` (the executor, the repository, the device and the compute type). Several
registry slugs that point at one repository (e.g. Canary slugs that differ only in their prompt) then hold
one copy of the weights in a process: the first load reads the snapshot, the others take a reference,
and the weights go when the last of them unloads. Across worker processes the host puts such engines in
one worker (see `talkies.workers.engine`), so the same holds with TALKIES_ENGINE_ISOLATION=process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from talkies.engines.base import EngineContext, Segment, Word
from talkies.engines.snapshot import ensure_snapshot
from talkies.errors import EngineError, ModelLoadError

if TYPE_CHECKING:
    from talkies.registry.schema import ModelSpec

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Give freed memory back where we can: a gc pass, and the CUDA cache when torch is in use."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


@dataclass
class _SharedEntry:
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while the weights load
    model: Any = None
    users: set[str] = field(default_factory=set)
    loads: int = 0  # how many times the weights were read from disk (tests and logs)


class SharedWeights:
    """Loaded models shared by the engines of one process, refcounted by the slugs that use them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _SharedEntry] = {}

    def acquire(self, key: Hashable, user: str, load: Callable[[], Any]) -> tuple[Any, bool]:
        """The model for `key`, loading it with `load()` unless another user holds it already.

        Returns (model, loaded_now). Two first users arriving together load it once: the second waits."""
        with self._lock:
            entry = self._entries.setdefault(key, _SharedEntry())
        with entry.lock:
            if entry.model is not None:
                entry.users.add(user)
                log.info(
                    "%s shares weights already loaded for %s", user, ", ".join(sorted(entry.users - {user}))
                )
                return entry.model, False
            model = load()
            entry.model = model
            entry.loads += 1
            entry.users.add(user)
            return model, True

    def release(self, key: Hashable, user: str) -> bool:
        """Drop `user`'s reference; True when that was the last one and the model is gone."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return True
            entry.users.discard(user)
            if entry.users:
                return False
            del self._entries[key]
            entry.model = None
            return True

    def users(self, key: Hashable) -> frozenset[str]:
        with self._lock:
            entry = self._entries.get(key)
            return frozenset(entry.users) if entry is not None else frozenset()

    def loads(self, key: Hashable) -> int:
        with self._lock:
            entry = self._entries.get(key)
            return entry.loads if entry is not None else 0


SHARED_WEIGHTS = SharedWeights()


class SnapshotEngine:
    """Base for engines whose weights live in a snapshot directory (see the module docstring)."""

    snapshot_patterns: tuple[str, ...] | None = None  # None: the whole repository
    required_files: tuple[str, ...] = ()  # glob patterns, each must match at least one file
    share_weights: bool = False  # True: slugs with the same weights_key() share one loaded model

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self.model: Any = None
        self._shared_key: Hashable | None = None

    def weights_key(self) -> Hashable | None:
        """What identifies this engine's weights in memory; None when they are never shared."""
        if not self.share_weights or not self.spec.repo:
            return None
        cls = type(self)
        return (
            f"{cls.__module__}:{cls.__qualname__}",
            self.spec.repo,
            self.context.device,
            self.spec.compute_type,
        )

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.model is not None:
            return
        key = self.weights_key()
        if key is None:
            self.model = self._load_snapshot()
        else:
            self.model, _ = SHARED_WEIGHTS.acquire(key, self.spec.slug, self._load_snapshot)
            self._shared_key = key
        try:
            self._loaded(self.model)
        except BaseException:
            self.unload()
            raise

    def _load_snapshot(self) -> Any:
        model_dir = ensure_snapshot(
            self.spec.slug, self.spec.repo, self.context.model_dir, allow_patterns=self.snapshot_patterns
        )
        missing = [pattern for pattern in self.required_files if not any(model_dir.glob(pattern))]
        if missing:
            raise ModelLoadError(
                f"model {self.spec.slug!r}: the snapshot in {model_dir} is incomplete, "
                f"nothing matches {', '.join(missing)} (run `talkies pull {self.spec.slug}` again)"
            )
        return self._load(model_dir)

    def _load(self, model_dir: Path) -> Any:
        raise NotImplementedError

    def _loaded(self, model: Any) -> None:
        """Hook: per-slug setup after the weights are in (also when they came from another slug)."""

    def _unloaded(self) -> None:
        """Hook: drop anything besides `self.model` that holds native memory."""

    def unload(self) -> None:
        self.model = None
        key, self._shared_key = self._shared_key, None
        if key is not None and not SHARED_WEIGHTS.release(key, self.spec.slug):
            log.info(
                "%s unloaded; its weights stay for %s",
                self.spec.slug,
                ", ".join(sorted(SHARED_WEIGHTS.users(key))),
            )
            return
        self._unloaded()
        release_memory()

    def require_model(self) -> Any:
        """The loaded model, or an EngineError when called before `load()`."""
        if self.model is None:
            raise EngineError(f"model {self.spec.slug!r} is not loaded")
        return self.model


# --- words -> segments, for engines that time words, not segments ----------------------------------

SEGMENT_GAP_S = 0.5
"""A silence at least this long between two words ends a segment (engines that time words, not segments)."""
MAX_SEGMENT_S = 15.0
"""A segment longer than this is closed at the next word boundary."""


def group_words(words: list[Word]) -> list[Segment]:
    """Words (in order, each with its leading space) -> Whisper-shape segments split at pauses of
    SEGMENT_GAP_S or at MAX_SEGMENT_S; a segment's text is its words joined."""
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and (
            word.start - current[-1].end >= SEGMENT_GAP_S or word.end - current[0].start > MAX_SEGMENT_S
        ):
            segments.append(_segment(current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment(current))
    return segments


def _segment(words: list[Word]) -> Segment:
    return Segment(start=words[0].start, end=words[-1].end, text="".join(w.word for w in words), words=words)
