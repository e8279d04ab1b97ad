"""The worker-process proxy of a Diarizer (talkies.engines.diarization.protocol): `diarize` is forwarded
like `transcribe`, the audio through shared memory when it is large; `max_speakers` and `embeds_speakers`
are data attributes, answered before load by the engine class constructed here, after it by the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from talkies.workers.engine import ProcessEngine

if TYPE_CHECKING:
    from talkies.engines.diarization.protocol import DiarizationRequest, DiarizationResult


class ProcessDiarizer(ProcessEngine):
    @property
    def max_speakers(self) -> int | None:
        value = self._attribute("max_speakers")
        return None if value is None else int(value)

    @property
    def embeds_speakers(self) -> bool:
        return bool(self._attribute("embeds_speakers"))

    def diarize(self, request: DiarizationRequest) -> DiarizationResult:
        return cast("DiarizationResult", self._call_with_audio("diarize", request))
