"""NVIDIA Sortformer on NeMo: end-to-end diarization of up to 4 speakers (GPU-oriented; v2 is CC-BY-4.0).

Snapshot: the hub repository's one `*.nemo` file (`nvidia/diar_streaming_sortformer_4spk-v2`). The model
answers a speaker-activity probability per 80 ms frame and speaker, in order of arrival; frames over
`ACTIVITY_THRESHOLD` are that speaker's speech, and turns are made exclusive (one speaker at a time) for the
ASR words. Sortformer has no speaker embeddings, so it cannot match known-speaker references
(`embeds_speakers = False`: such a request answers 400). A speaker-count hint keeps the most active
speakers (it cannot create more than the model found).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from talkies.engines.base import checkpoint
from talkies.engines.common import SnapshotEngine
from talkies.engines.diarization.protocol import (
    DiarizationRequest,
    DiarizationResult,
    SpeakerTurn,
    exclusive_turns,
)

ACTIVITY_THRESHOLD = 0.5
MIN_TURN_S = 0.2
"""Shorter activity (and shorter gaps inside one speaker's activity) is dropped (merged)."""


class SortformerDiarizer(SnapshotEngine):
    snapshot_patterns = ("*.nemo",)
    required_files = ("*.nemo",)
    max_speakers: int | None = 4
    embeds_speakers = False

    def _load(self, model_dir: Path) -> Any:
        import torch
        from nemo.collections.asr.models import SortformerEncLabelModel

        nemo_file = sorted(model_dir.glob("*.nemo"))[0]
        device = torch.device(self.context.device if self.context.device.startswith("cuda") else "cpu")
        model = SortformerEncLabelModel.restore_from(str(nemo_file), map_location=device)
        model.eval()
        return model

    def diarize(self, request: DiarizationRequest) -> DiarizationResult:
        import torch

        model = self.require_model()
        audio = torch.from_numpy(np.ascontiguousarray(request.audio, dtype=np.float32)).unsqueeze(0)
        length = torch.tensor([audio.shape[1]])
        checkpoint()
        with torch.inference_mode():
            activity = model.forward(audio_signal=audio.to(model.device), audio_signal_length=length)
        checkpoint()
        probabilities = activity[0].float().cpu().numpy()  # (frames, speakers)
        frame = float(model.preprocessor._cfg.window_stride) * int(model._cfg.encoder.subsampling_factor)
        turns = activity_turns(probabilities, frame)
        keep = request.num_speakers or request.max_speakers
        if keep is not None:
            talk: dict[int, float] = {}
            for turn in turns:
                talk[turn.speaker] = talk.get(turn.speaker, 0.0) + turn.end - turn.start
            kept = set(sorted(talk, key=lambda s: -talk[s])[:keep])
            turns = [turn for turn in turns if turn.speaker in kept]
        return DiarizationResult(turns=exclusive_turns(turns))


def activity_turns(probabilities: np.ndarray[Any, Any], frame: float) -> list[SpeakerTurn]:
    """Per-speaker runs of frames over ACTIVITY_THRESHOLD, with short gaps closed and short runs dropped."""
    turns: list[SpeakerTurn] = []
    for speaker in range(probabilities.shape[1]):
        active = probabilities[:, speaker] > ACTIVITY_THRESHOLD
        runs: list[list[float]] = []
        start = None
        for index, on in enumerate([*active, False]):
            if on and start is None:
                start = index
            elif not on and start is not None:
                begin, end = start * frame, index * frame
                if runs and begin - runs[-1][1] < MIN_TURN_S:
                    runs[-1][1] = end
                else:
                    runs.append([begin, end])
                start = None
        turns += [SpeakerTurn(b, e, speaker) for b, e in runs if e - b >= MIN_TURN_S]
    return sorted(turns, key=lambda t: t.start)
