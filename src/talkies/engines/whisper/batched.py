"""Whisper's 30 s windows from concurrent requests decoded in one encode + generate call.

`CrossRequestPipeline` is faster-whisper's `BatchedInferencePipeline` with one step replaced: instead of
decoding a request's windows `batch_size` at a time on its own, it hands them to the model's `Batcher`
as work units and yields each window's segments as the batch holding it finishes. Everything before
(feature extraction, language detection, the tokenizer and `TranscriptionOptions`) and the calls that
decode a batch (`generate_segment_batched`, `_split_segments_by_timestamps`, `add_word_timestamps`) are
faster-whisper's own, so a window decodes exactly as on the per-request path.

Units share a call when their `WindowKey`s are equal: same language and task (the tokenizer) and the same
`TranscriptionOptions` (prompt, temperature, beam, word timestamps...). Word timestamps keep the one piece
of per-request state faster-whisper carries between windows (the end of the last word) per request, and
align each request's windows against its own rows of the shared encoder output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from talkies.engines.batching import Batcher

WindowSegments = list[dict[str, Any]]
"""One window's decoded segments, as faster-whisper's `forward` builds them (times absolute)."""


@dataclass(frozen=True, slots=True)
class WindowKey:
    """What a call needs to be shared: equal signatures decode together. The tokenizer and options of
    the first request in the batch are used for all (equal signature: equal decoding)."""

    signature: tuple[Any, ...]
    tokenizer: Any = field(compare=False, hash=False)
    options: Any = field(compare=False, hash=False)


@dataclass(slots=True)
class _RequestWords:
    """Per request: where its last word ended (faster-whisper's `last_speech_timestamp`)."""

    last_speech: float = 0.0


@dataclass(frozen=True, slots=True)
class Window:
    """One work unit: a window's log-mel features and its place in the request's audio."""

    features: np.ndarray[Any, Any]
    metadata: dict[str, Any]
    words: _RequestWords


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def window_key(tokenizer: Any, options: Any) -> WindowKey:
    fields = dataclasses.asdict(options)
    fields.pop("clip_timestamps", None)  # where the windows are, not how they decode
    signature = (tokenizer.language_code, tokenizer.task, _frozen(fields))
    return WindowKey(signature, tokenizer, options)


def decode_windows(model: Any, key: WindowKey, windows: list[Window]) -> list[WindowSegments]:
    """One forward pass for `windows` (any mix of requests with equal keys): their segments, in order."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.transcribe import get_compression_ratio

    tokenizer, options = key.tokenizer, key.options
    features = np.stack([w.features for w in windows])
    encoder_output, outputs = BatchedInferencePipeline(model).generate_segment_batched(
        features, tokenizer, options
    )
    decoded: list[WindowSegments] = []
    sizes: list[int] = []
    for window, output in zip(windows, outputs, strict=True):
        duration = window.metadata["duration"]
        size = int(np.ceil(duration) * model.frames_per_second)
        sizes.append(size)
        subsegments, _, _ = model._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=output["tokens"],
            time_offset=window.metadata["offset"],
            segment_size=size,
            segment_duration=duration,
            seek=0,
        )
        seek = int(window.metadata["offset"] * model.frames_per_second)
        segments: WindowSegments = []
        for sub in subsegments:
            text = tokenizer.decode(sub["tokens"])
            segments.append(
                {
                    "text": text,
                    "avg_logprob": output["avg_logprob"],
                    "no_speech_prob": output["no_speech_prob"],
                    "tokens": sub["tokens"],
                    "start": sub["start"],
                    "end": sub["end"],
                    "compression_ratio": get_compression_ratio(text),
                    "seek": seek,
                }
            )
        decoded.append(segments)
    if options.word_timestamps:
        _add_words(model, key, windows, decoded, sizes, encoder_output)
    return decoded


def _add_words(
    model: Any,
    key: WindowKey,
    windows: list[Window],
    decoded: list[WindowSegments],
    sizes: list[int],
    encoder_output: Any,
) -> None:
    """Word alignment per request (runs of its windows), each against its own encoder rows."""
    import ctranslate2

    start = 0
    whole = len(windows)
    while start < whole:
        words = windows[start].words
        end = start
        while end < whole and windows[end].words is words:
            end += 1
        rows = encoder_output
        if (start, end) != (0, whole):
            rows = ctranslate2.StorageView.from_array(
                np.ascontiguousarray(np.asarray(encoder_output)[start:end])
            )
        last = model.add_word_timestamps(
            decoded[start:end],
            key.tokenizer,
            rows,
            sizes[start:end],
            key.options.prepend_punctuations,
            key.options.append_punctuations,
            words.last_speech,
        )
        if last is not None:
            words.last_speech = last
        start = end


def cross_request_pipeline(model: Any, batcher: Batcher[WindowKey, Window, WindowSegments]) -> Any:
    """A `BatchedInferencePipeline` whose windows go through the model's batcher (see the module doc)."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.transcribe import Segment, Word

    class _Pipeline(BatchedInferencePipeline):  # type: ignore[misc]
        def _batched_segments_generator(
            self,
            features: Sequence[np.ndarray[Any, Any]],
            tokenizer: Any,
            chunks_metadata: list[dict[str, Any]],
            batch_size: int,
            options: Any,
            log_progress: bool,
        ) -> Iterator[Any]:
            words = _RequestWords()
            units = [Window(f, m, words) for f, m in zip(features, chunks_metadata, strict=True)]
            ticket = batcher.submit(window_key(tokenizer, options), units)
            index = 0
            try:
                for segments in ticket.results():
                    for seg in segments:
                        index += 1
                        yield Segment(
                            seek=seg["seek"],
                            id=index,
                            text=seg["text"],
                            start=round(seg["start"], 3),
                            end=round(seg["end"], 3),
                            words=[Word(**w) for w in seg["words"]] if options.word_timestamps else None,
                            tokens=seg["tokens"],
                            avg_logprob=seg["avg_logprob"],
                            no_speech_prob=seg["no_speech_prob"],
                            compression_ratio=seg["compression_ratio"],
                            temperature=options.temperatures[0],
                        )
            finally:
                ticket.cancel()  # a consumer that stops early drops its windows still waiting

    return _Pipeline(model)
