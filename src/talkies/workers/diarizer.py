"""The worker-process proxy of a Diarizer (talkies.engines.diarization.protocol): `diarize` is forwarded
like `transcribe`, the audio through shared memory when it is large; `max_speakers` and `embeds_speakers`
are data attributes, answered before load by the engine class constructed here, after it by the worker."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from talkies.workers.engine import ProcessEngine, _forward_cancel
from talkies.workers.ipc import INLINE_ARRAY_BYTES

if TYPE_CHECKING:
    from talkies.engines.diarization.protocol import DiarizationRequest, DiarizationResult

_NO_AUDIO = np.zeros(0, dtype=np.float32)


class ProcessDiarizer(ProcessEngine):
    @property
    def max_speakers(self) -> int | None:
        value = self._attribute("max_speakers")
        return None if value is None else int(value)

    @property
    def embeds_speakers(self) -> bool:
        return bool(self._attribute("embeds_speakers"))

    def diarize(self, request: DiarizationRequest) -> DiarizationResult:
        worker = self._running()
        audio = np.ascontiguousarray(request.audio)
        shared = worker.blocks.put(audio) if audio.nbytes > INLINE_ARRAY_BYTES else None
        retained = True
        try:
            payload = (dataclasses.replace(request, audio=_NO_AUDIO), shared[0] if shared else audio)
            rid, inbox = worker.open("diarize", payload, self.context.slug)
            stop_forwarding = _forward_cancel(worker, rid)
            try:
                result: DiarizationResult
                result, retained = worker.next_reply(inbox, self.call_timeout, self.context.slug)
                return result
            finally:
                stop_forwarding()
                worker.close_request(rid)
        finally:
            if shared is not None:
                worker.blocks.give_back(*shared, retained=retained)
