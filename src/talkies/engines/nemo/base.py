"""What the NeMo executors share: restoring a `.nemo` checkpoint offline, devices and dtypes, languages,
and decoding a file's VAD regions in batches.

`$TALKIES_DATA_DIR/models/<slug>/` holds a copy of the model's hub repository; its `*.nemo` file is
restored with `ASRModel.restore_from(path, map_location=<device>)`: no network, no hub. On CUDA the
weights are cast to bfloat16 (float16 where the GPU has no bfloat16; the registry's `compute_type`
`float16` / `bfloat16` / `float32` wins) and decoding runs under autocast; on CPU everything stays
float32.

Long files: the server's VAD regions (at most TALKIES_VAD_MAX_SPEECH seconds each) arrive in
`request.regions`; they are cut out of the audio and handed to NeMo's `transcribe()` as one list with
`batch_size` = TALKIES_NEMO_BATCH_SIZE, so NeMo pads and decodes them together. Each region's timestamps
are then shifted by the region's start: every time in the result counts from the start of the file.

Cross-request batching (docs/batching.md): with a batcher (the default), the regions of concurrent
requests that decode alike (Parakeet: all; Canary: the same prompt) share one `transcribe()` call of up
to `max_batch_size` clips; `decode_clips` is that call, `decode` sends a request's clips through it.

Engine options (`EngineContext.options`): `nemo_batch_size` (regions decoded together when batching is
off, default 4), `batching` (TALKIES_BATCHING).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from talkies.engines.base import ASR_SAMPLE_RATE, EngineContext, Region
from talkies.engines.batch_host import BatchHost
from talkies.engines.common import SnapshotEngine
from talkies.errors import ModelLoadError, UnsupportedLanguageError

if TYPE_CHECKING:
    from talkies.registry.schema import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4
MIN_CLIP_SECONDS = 0.5  # shorter regions are padded with silence: the 8x subsampling needs a few frames
_DTYPES = ("float32", "float16", "bfloat16")

PCM = npt.NDArray[np.float32]


@dataclass
class LoadedNemo:
    """A restored model and what goes with it. Shared by every slug on the same weights, so the lock
    (NeMo's transcribe() switches the model's modes and decoding config) is shared too."""

    model: Any
    dtype: str
    lock: threading.Lock


def quiet_nemo() -> None:
    """NeMo logs every dataloader and config step at INFO/WARNING; keep the server's log readable."""
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)


class NemoEngine(SnapshotEngine, BatchHost):
    """Base of the NeMo Transcribers (see the module docstring). Subclasses decode in `_transcribe_clips`."""

    snapshot_patterns: tuple[str, ...] | None = ("*.nemo", "*.json", "*.md")
    required_files: tuple[str, ...] = ("*.nemo",)
    batches_regions = True
    can_translate = False

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        super().__init__(spec, context)
        self.languages: tuple[str, ...] = spec.languages
        batch = context.options.get("nemo_batch_size", DEFAULT_BATCH_SIZE)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ModelLoadError(f"NeMo option 'nemo_batch_size' must be a positive integer, got {batch!r}")
        self.batch_size = batch
        self.init_batching(spec, context)

    # --- loading -------------------------------------------------------------------------------------

    @property
    def torch_device(self) -> str:
        return self.context.device if self.context.device.startswith("cuda") else "cpu"

    def pick_dtype(self) -> str:
        explicit = self.spec.compute_type or self.context.options.get("compute_type")
        if explicit:
            if explicit not in _DTYPES:
                raise ModelLoadError(
                    f"model {self.spec.slug!r}: compute_type {explicit!r} is not one NeMo runs; "
                    f"use one of {', '.join(_DTYPES)}"
                )
            return str(explicit)
        if self.torch_device == "cpu":
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def _load(self, model_dir: Path) -> LoadedNemo:
        checkpoints = sorted(model_dir.glob("*.nemo"))
        if len(checkpoints) > 1:
            log.warning(
                "%s: several .nemo files in %s, using %s", self.spec.slug, model_dir, checkpoints[0].name
            )
        dtype = self.pick_dtype()
        if dtype != "float32" and self.torch_device == "cpu":
            raise ModelLoadError(f"model {self.spec.slug!r}: compute_type {dtype} needs CUDA; use float32")
        import torch
        from nemo.collections.asr.models import ASRModel

        quiet_nemo()
        if self.context.cpu_threads:
            torch.set_num_threads(self.context.cpu_threads)
        try:
            model = ASRModel.restore_from(
                str(checkpoints[0]), map_location=torch.device(self.torch_device), strict=True
            )
        except Exception as exc:
            raise ModelLoadError(
                f"model {self.spec.slug!r} failed to restore {checkpoints[0]}: {type(exc).__name__}: {exc}"
            ) from exc
        model.eval()
        if dtype != "float32":
            preprocessor = getattr(model, "preprocessor", None)
            model.to(dtype=getattr(torch, dtype))
            if preprocessor is not None:  # mel features stay float32; autocast casts at the encoder
                preprocessor.float()
        self._prepare(model)
        log.info(
            "%s: restored %s (%s) on %s as %s",
            self.spec.slug, checkpoints[0].name, type(model).__name__, self.torch_device, dtype,
        )  # fmt: skip
        return LoadedNemo(model=model, dtype=dtype, lock=threading.Lock())

    def _prepare(self, model: Any) -> None:
        """Hook: one-time decoding set-up on a freshly restored model (before any slug shares it)."""

    def _loaded(self, model: Any) -> None:
        self.start_batcher(self.spec.slug, lambda key, clips: self.decode_clips(key, clips, len(clips)))

    def unload(self) -> None:
        self.stop_batcher()
        super().unload()

    # --- decoding ------------------------------------------------------------------------------------

    def decode_clips(self, key: Hashable, clips: list[PCM], batch_size: int) -> list[Any]:
        """One `transcribe()` of `clips` decoded alike (`key`: what they share), hypotheses in order."""
        raise NotImplementedError

    def decode(self, key: Hashable, clips: list[PCM]) -> list[Any]:
        """This request's clips: through the cross-request batcher, or on their own in batches of
        `nemo_batch_size` when batching is off."""
        results = self.batched(key, clips)
        if results is None:
            return self.decode_clips(key, clips, self.batch_size)
        return list(results)

    @contextmanager
    def running(self) -> Iterator[Any]:
        """The model, locked, under no_grad and (on CUDA) autocast to its dtype."""
        import torch

        loaded: LoadedNemo = self.require_model()
        autocast: Any = nullcontext()
        if loaded.dtype != "float32":
            autocast = torch.autocast(device_type="cuda", dtype=getattr(torch, loaded.dtype))
        with loaded.lock, torch.no_grad(), autocast:
            yield loaded.model

    # --- languages -----------------------------------------------------------------------------------

    @property
    def only_language(self) -> str | None:
        """The model's language when it has exactly one (what a result reports when nothing else says)."""
        return self.languages[0] if len(self.languages) == 1 else None

    def validate_language(self, code: str | None) -> str | None:
        """Normalize `code` ("DE" -> "de"; "", "auto" -> None) or raise naming the model's languages."""
        if code is None:
            return None
        normalized = code.strip().lower()
        if normalized in ("", "auto"):
            return None
        if self.languages and normalized not in self.languages:
            raise UnsupportedLanguageError(
                f"language {code!r} is not supported by model {self.spec.slug!r}; "
                f"valid codes: {', '.join(self.languages)}",
                param="language",
            )
        return normalized

    # --- regions -------------------------------------------------------------------------------------

    @staticmethod
    def cut_regions(audio: PCM, regions: tuple[Region, ...] | None) -> list[tuple[Region, PCM]]:
        """The clips to decode: each VAD region (or the whole file), padded to MIN_CLIP_SECONDS."""
        duration = len(audio) / ASR_SAMPLE_RATE
        spans = regions if regions is not None else (Region(0.0, duration),)
        clips = []
        for region in spans:
            clip = audio[int(region.start * ASR_SAMPLE_RATE) : int(region.end * ASR_SAMPLE_RATE)]
            if len(clip) == 0:
                continue
            shortfall = int(MIN_CLIP_SECONDS * ASR_SAMPLE_RATE) - len(clip)
            if shortfall > 0:
                clip = np.concatenate([clip, np.zeros(shortfall, dtype=np.float32)])
            clips.append((region, np.ascontiguousarray(clip, dtype=np.float32)))
        return clips
