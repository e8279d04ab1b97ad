"""Making `qwen_tts` (the qwen-tts-hf port) import and load on the stack talkies ships.

Three gaps:

* `qwen_tts.core` imports its 25 Hz tokenizer, which imports `torchaudio.compliance.kaldi`. PyPI's
  torchaudio is built against CUDA torch and does not load next to a CPU build of torch 2.13, and none of
  the 12 Hz checkpoints use that tokenizer. When torchaudio does not import, a placeholder module stands
  in whose functions raise, so a 25 Hz checkpoint fails loudly instead of silently.
* Two qwen_tts classes declare `_tied_weights_keys` as a list; transformers 5.2x expects a mapping and
  fails in `save_pretrained` / weight tying. Neither model ties its head (the config says so), so the
  mapping is empty.
* qwen-tts-hf's "default" RoPE initializer reads `config.rope_theta`; in the transformers 5.x talkies
  pins, the Mimi config of the speech tokenizer keeps it in `rope_parameters` only. The replacement
  reads either.

`prepare()` is idempotent and is called inside `load()` (and by the test-model builders), never at import.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
import threading
import types
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_prepared = False


def prepare() -> None:
    """Import `qwen_tts` with the shims in place."""
    global _prepared
    with _lock:
        if _prepared:
            return
        _ensure_torchaudio()
        importlib.import_module("qwen_tts")
        _untie_heads()
        _patch_default_rope()
        _prepared = True


def _ensure_torchaudio() -> None:
    try:
        importlib.import_module("torchaudio.compliance.kaldi")
        return
    except Exception as exc:  # OSError / ImportError from a torchaudio built for another torch
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
        del sys.modules[name]
    log.info("torchaudio unavailable (%s); Qwen3-TTS 12 Hz models do not need it", reason)

    def unavailable(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"torchaudio is not usable here ({reason}); 25 Hz Qwen3-TTS tokenizers need it")

    package = types.ModuleType("torchaudio")
    compliance = types.ModuleType("torchaudio.compliance")
    kaldi = types.ModuleType("torchaudio.compliance.kaldi")
    kaldi.fbank = unavailable  # type: ignore[attr-defined]
    package.compliance = compliance  # type: ignore[attr-defined]
    compliance.kaldi = kaldi  # type: ignore[attr-defined]
    for module in (package, compliance, kaldi):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
        sys.modules[module.__name__] = module


def _untie_heads() -> None:
    from qwen_tts.core.models import modeling_qwen3_tts

    for value in vars(modeling_qwen3_tts).values():
        if isinstance(value, type) and isinstance(getattr(value, "_tied_weights_keys", None), list):
            value._tied_weights_keys = {}  # type: ignore[attr-defined]


def _patch_default_rope() -> None:
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    def default_rope(
        config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
    ) -> tuple[Any, float]:
        base = getattr(config, "rope_theta", None)
        if base is None:
            params = getattr(config, "rope_parameters", None) or {}
            base = params.get("rope_theta", 10000.0) if isinstance(params, dict) else 10000.0
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dim = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
        exponent = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
        return 1.0 / (base**exponent), 1.0

    ROPE_INIT_FUNCTIONS["default"] = default_rope
