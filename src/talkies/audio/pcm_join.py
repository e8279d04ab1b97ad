"""Click-free joins between PCM chunks synthesized one after another.

Each chunk of a chunked synthesis ends and starts wherever its waveform happens to be, so gluing them
end to end leaves a step (a click). `CrossfadeJoiner` holds back the last `overlap` samples of every
chunk and blends them with the head of the next one (equal-power raised-cosine crossfade), so the seam
is continuous; it still hands each chunk on as soon as it arrives, minus that short tail.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

DEFAULT_OVERLAP_S = 0.010


class CrossfadeJoiner:
    def __init__(self, sample_rate: int, overlap_s: float = DEFAULT_OVERLAP_S) -> None:
        self.overlap = max(1, round(sample_rate * overlap_s))
        self._tail: FloatArray | None = None

    def push(self, chunk: FloatArray) -> FloatArray:
        """Take the next chunk; return what can be emitted now (the chunk minus its held-back tail)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if chunk.size == 0:
            return chunk
        if self._tail is not None:
            n = min(self._tail.size, chunk.size)
            fade_in, fade_out = _ramps(n)
            seam = self._tail[self._tail.size - n :] * fade_out + chunk[:n] * fade_in
            chunk = np.concatenate([self._tail[: self._tail.size - n], seam, chunk[n:]])
        keep = min(self.overlap, chunk.size)
        self._tail = chunk[chunk.size - keep :].copy()
        return chunk[: chunk.size - keep]

    def flush(self) -> FloatArray:
        """The held-back tail of the last chunk (the end of the clip)."""
        tail, self._tail = self._tail, None
        return tail if tail is not None else np.zeros(0, dtype=np.float32)


def join_chunks(
    chunks: Iterable[FloatArray], sample_rate: int, overlap_s: float = DEFAULT_OVERLAP_S
) -> Iterator[FloatArray]:
    """Yield `chunks` crossfaded into one continuous signal, chunk by chunk."""
    joiner = CrossfadeJoiner(sample_rate, overlap_s)
    for chunk in chunks:
        out = joiner.push(chunk)
        if out.size:
            yield out
    tail = joiner.flush()
    if tail.size:
        yield tail


def _ramps(n: int) -> tuple[FloatArray, FloatArray]:
    """Equal-power fade-in / fade-out of `n` samples (sin^2 + cos^2 = 1 keeps loudness across the seam)."""
    angle = (np.arange(n, dtype=np.float64) + 0.5) * (np.pi / 2 / n)
    return np.sin(angle).astype(np.float32), np.cos(angle).astype(np.float32)
