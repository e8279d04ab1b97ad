"""The whisper executor's engine options (`EngineContext.options`), checked at construction: which are
faster-whisper decoding knobs passed through, which the engine reads itself (see engine.py's docstring)."""

from __future__ import annotations

from typing import Any

from talkies.errors import ModelLoadError

INT_OPTIONS = ("beam_size", "best_of", "max_new_tokens", "no_repeat_ngram_size")
FLOAT_OPTIONS = (
    "patience", "repetition_penalty", "compression_ratio_threshold", "log_prob_threshold",
    "no_speech_threshold", "hallucination_silence_threshold",
)  # fmt: skip
BOOL_OPTIONS = ("condition_on_previous_text", "without_timestamps")
ENGINE_OPTIONS = (
    "compute_type",
    "batch_size",
    "num_workers",
    "max_region_gap",
    "batching",
    "nemo_batch_size",
)


def decode_options(options: dict[str, object]) -> dict[str, Any]:
    decode: dict[str, Any] = {}
    for key, value in options.items():
        if key in INT_OPTIONS:
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if "ngram" in key else 1):
                raise ModelLoadError(f"whisper option {key!r} must be a positive integer, got {value!r}")
            decode[key] = value
        elif key in FLOAT_OPTIONS:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ModelLoadError(f"whisper option {key!r} must be a number or null, got {value!r}")
            decode[key] = None if value is None else float(value)
        elif key in BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise ModelLoadError(f"whisper option {key!r} must be true or false, got {value!r}")
            decode[key] = value
    return decode


def positive_int(options: dict[str, object], key: str, default: int) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelLoadError(f"whisper option {key!r} must be a positive integer, got {value!r}")
    return value
