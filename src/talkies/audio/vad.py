"""Silero VAD speech regions, on the ONNX model shipped inside the `silero-vad` wheel (the `vad` extra).

The stock streaming model scores one 32 ms window (512 samples) per `session.run`, carrying its LSTM state
through a Python loop: ~19,000 calls for 10 minutes of audio. The wheel also ships
`silero_vad_16k_sequence.onnx`, which runs the same network over a whole block of windows in one call
with bit-identical probabilities; we feed it blocks of 512 windows (16 s), so 10 minutes take 37 calls
(bench/vad_speed.py has the figures). The model is located without importing the `silero_vad` package,
whose `__init__` imports torch.

Region rules follow silero's `get_speech_timestamps`: speech starts at a window >= threshold, ends after
`min_silence_ms` below `threshold - 0.15`, regions shorter than 250 ms are dropped, and `speech_pad_ms` is
added on both sides (half the gap each when two regions are closer than twice the pad). Regions longer
than `max_speech_s` are split at their longest silence, recursively (`split_long_region`).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from talkies.engines.base import Region
from talkies.errors import EngineUnavailableError

if TYPE_CHECKING:
    import onnxruntime

    from talkies.settings import Settings

VAD_SAMPLE_RATE = 16_000
WINDOW = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64  # trailing samples of the previous window the model sees before each window
BLOCK_WINDOWS = 512  # windows per session.run (16.4 s): bounds transient memory to ~1.2 MB
MIN_SPEECH_MS = 250
NEG_THRESHOLD_GAP = 0.15
MODEL_FILE = "silero_vad_16k_sequence.onnx"


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 200
    max_speech_s: float = 28.0

    @classmethod
    def from_settings(cls, settings: Settings) -> VadOptions:
        """The TALKIES_VAD_* knobs."""
        return cls(
            threshold=settings.vad_threshold,
            min_silence_ms=settings.vad_min_silence_ms,
            speech_pad_ms=settings.vad_speech_pad_ms,
            max_speech_s=settings.vad_max_speech,
        )


def speech_regions(
    pcm: npt.NDArray[np.float32], options: VadOptions, sample_rate: int = VAD_SAMPLE_RATE
) -> list[Region]:
    """Speech regions of mono `pcm`, in seconds, none longer than `options.max_speech_s`."""
    audio = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)
    if sample_rate != VAD_SAMPLE_RATE:
        from talkies.audio.encode import resample

        audio = resample(audio, sample_rate, VAD_SAMPLE_RATE)
    return regions_from_probabilities(speech_probabilities(audio), options, audio.size)


def speech_probabilities(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """One speech probability per 512-sample window of 16 kHz mono audio (last window zero-padded)."""
    if audio.size == 0:
        return np.zeros(0, dtype=np.float32)
    session = vad_session()
    hidden = np.zeros((1, 1, 128), dtype=np.float32)
    cell = np.zeros((1, 1, 128), dtype=np.float32)
    probabilities = np.empty(-(-audio.size // WINDOW), dtype=np.float32)
    done = 0
    for block in _blocks(audio):
        values, hidden, cell = session.run(
            ["speech_probs", "hn", "cn"], {"input": block, "h": hidden, "c": cell}
        )
        probabilities[done : done + block.shape[0]] = values.reshape(-1)
        done += block.shape[0]
    return probabilities


def regions_from_probabilities(
    probabilities: npt.NDArray[np.float32],
    options: VadOptions,
    num_samples: int,
    sample_rate: int = VAD_SAMPLE_RATE,
) -> list[Region]:
    """Window probabilities -> padded regions in seconds (pure: no model involved)."""
    window_s = WINDOW / sample_rate
    duration = num_samples / sample_rate
    pad = options.speech_pad_ms / 1000
    # Splitting happens before padding, so leave room for the pad on both sides.
    max_windows = max(1, int((options.max_speech_s - 2 * pad) / window_s))
    spans: list[tuple[int, int]] = []
    for start, end in _raw_spans(probabilities, options, sample_rate):
        spans.extend(split_long_region(probabilities, start, end, max_windows, options.threshold))
    regions: list[Region] = []
    for index, (start, end) in enumerate(spans):
        begin = start * window_s - pad
        finish = min(end * window_s, duration) + pad
        if index > 0:
            gap = start * window_s - spans[index - 1][1] * window_s
            begin = max(begin, start * window_s - gap / 2)
        if index + 1 < len(spans):
            gap = spans[index + 1][0] * window_s - end * window_s
            finish = min(finish, end * window_s + gap / 2)
        regions.append(Region(start=round(max(begin, 0.0), 3), end=round(min(finish, duration), 3)))
    return regions


def split_long_region(
    probabilities: npt.NDArray[np.floating[Any]],
    start: int,
    end: int,
    max_windows: int,
    threshold: float = 0.5,
) -> list[tuple[int, int]]:
    """Cut windows [start, end) into spans of at most `max_windows`, recursively at the longest silence.

    The silence is the longest run of windows below `threshold` strictly inside the span (ties: the
    quietest run); with no such run, the single quietest window. The silence itself belongs to neither
    side. Pure: works on any probability array."""
    if end - start <= max_windows:
        return [(start, end)]
    inner = np.asarray(probabilities[start + 1 : end - 1], dtype=np.float64)
    cut_start, cut_end = _longest_silence(inner, threshold) if inner.size else (0, 0)
    cut_start += start + 1
    cut_end += start + 1
    return split_long_region(probabilities, start, cut_start, max_windows, threshold) + split_long_region(
        probabilities, cut_end, end, max_windows, threshold
    )


def _longest_silence(probs: npt.NDArray[np.float64], threshold: float) -> tuple[int, int]:
    """[start, end) of the longest run below threshold (ties: lowest mean), else the quietest window."""
    quiet = np.concatenate(([False], probs < threshold, [False]))
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    if starts.size == 0:
        lowest = int(np.argmin(probs))
        return lowest, lowest + 1
    lengths = ends - starts
    means = np.array([probs[s:e].mean() for s, e in zip(starts, ends, strict=True)])
    best = int(np.lexsort((means, -lengths))[0])
    return int(starts[best]), int(ends[best])


def _raw_spans(
    probabilities: npt.NDArray[np.float32], options: VadOptions, sample_rate: int
) -> Iterator[tuple[int, int]]:
    """Unpadded speech spans as [start, end) window indices (silero's hysteresis state machine)."""
    window_s = WINDOW / sample_rate
    neg_threshold = max(options.threshold - NEG_THRESHOLD_GAP, 0.01)
    min_silence = options.min_silence_ms / 1000 / window_s
    min_speech = MIN_SPEECH_MS / 1000 / window_s
    start: int | None = None
    silence_from: int | None = None
    for index, probability in enumerate(probabilities.tolist()):
        if probability >= options.threshold:
            silence_from = None
            if start is None:
                start = index
        elif probability < neg_threshold and start is not None:
            if silence_from is None:
                silence_from = index
            if index - silence_from >= min_silence:
                if silence_from - start >= min_speech:
                    yield start, silence_from
                start = silence_from = None
    if start is not None and probabilities.size - start >= min_speech:
        yield start, int(probabilities.size)


def _blocks(audio: npt.NDArray[np.float32]) -> Iterator[npt.NDArray[np.float32]]:
    """(windows, CONTEXT + WINDOW) blocks: each window prefixed with the previous window's tail."""
    total = -(-audio.size // WINDOW)
    previous_tail = np.zeros(CONTEXT, dtype=np.float32)
    for first in range(0, total, BLOCK_WINDOWS):
        count = min(BLOCK_WINDOWS, total - first)
        samples = audio[first * WINDOW : (first + count) * WINDOW]
        windows = np.zeros((count, WINDOW), dtype=np.float32)
        windows.reshape(-1)[: samples.size] = samples  # contiguous, so reshape is a view
        block = np.empty((count, CONTEXT + WINDOW), dtype=np.float32)
        block[:, CONTEXT:] = windows
        block[0, :CONTEXT] = previous_tail
        block[1:, :CONTEXT] = windows[:-1, -CONTEXT:]
        previous_tail = windows[-1, -CONTEXT:].copy()
        yield block


def model_path(name: str = MODEL_FILE) -> Path:
    """Path of an ONNX file inside the installed `silero_vad` package, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "data" / name
        if candidate.is_file():
            return candidate
    raise EngineUnavailableError(
        f"Silero VAD model {name} not found: install the vad extra (pip install 'talkies[vad]')"
    )


@functools.cache
def vad_session(threads: int = 1) -> onnxruntime.InferenceSession:
    """The process's VAD session, created on first use (run() is thread-safe in onnxruntime)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailableError(
            "Silero VAD needs onnxruntime: install the vad extra (pip install 'talkies[vad]')"
        ) from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the exported graph has unused initializers ort warns about
    return onnxruntime.InferenceSession(
        str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
