"""The two ways talkies runs a Qwen3-TTS checkpoint, behind one `stream(job, stop)` interface.

* `TransformersRuntime` (CPU, any device torch supports): the `qwen_tts` package (qwen-tts-hf) on
  transformers. Upstream only returns a whole clip, so the talker's `generate()` runs in a thread and a
  forward hook on the talker hands over each codec frame (16 codes) as it is produced; frames are decoded
  by the 12 Hz speech tokenizer in chunks with 25 frames of left context (upstream's own chunked decode),
  so audio leaves while later frames are still being generated. A stop event aborts the generation at
  the next talker step.
* `FasterRuntime` (CUDA): `faster-qwen3-tts`, CUDA graphs around the talker and the code predictor,
  captured by `warmup()` at load; its `generate_*_streaming` methods yield chunks as they are decoded.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FIRST_CHUNK_FRAMES = 3  # ~240 ms of audio: the first bytes leave early
CHUNK_FRAMES = 12  # ~1 s per chunk afterwards (decode cost per frame falls with longer chunks)
CONTEXT_FRAMES = 25  # left context for each decode window, as upstream's chunked_decode

Pcm = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Reference:
    """A base-mode reference: 24 kHz mono audio, its transcript (None: x-vector only)."""

    key: tuple[Any, ...]  # identifies the prompt for caching (path, mtime, size, transcript)
    wav: Path
    audio: Pcm
    transcript: str | None


@dataclass(frozen=True, slots=True)
class Job:
    """One synthesis, with the mode already resolved."""

    mode: str  # "base" | "custom_voice" | "voice_design"
    text: str
    language: str
    speaker: str | None = None
    instruct: str | None = None
    reference: Reference | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # do_sample, top_k, ... max_new_tokens


@dataclass(slots=True)
class Progress:
    """What the last job did (read by logs and tests)."""

    frames: int = 0
    max_frames: int = 0
    stopped: bool = False


class _Stopped(Exception):
    """Raised inside the talker's forward to abort `generate()` when the consumer went away."""


class TransformersRuntime:
    sample_rate = 24_000

    def __init__(self, model_dir: Path, device: str) -> None:
        import torch

        from talkies.engines.qwen3 import compat

        compat.prepare()
        from qwen_tts import Qwen3TTSModel

        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        self.tts = Qwen3TTSModel.from_pretrained(str(model_dir), dtype=dtype)
        if device != "cpu":
            self.tts.model.to(device)
            self.tts.device = torch.device(device)
        self.tts.model.eval()
        self.config = self.tts.model.config
        tokenizer = self.tts.model.speech_tokenizer
        self.sample_rate = int(tokenizer.get_output_sample_rate())
        self.samples_per_frame = int(tokenizer.get_decode_upsample_rate())
        self._prompts: dict[tuple[Any, ...], Any] = {}
        self.progress = Progress()

    def close(self) -> None:
        self._prompts.clear()
        self.tts = None

    # -- one job ------------------------------------------------------------------------------------
    def stream(self, job: Job, stop: threading.Event) -> Iterator[Pcm]:
        import torch

        generate_kwargs, prefix_codes = self._prepare(job)
        frames: queue.Queue[Any] = queue.Queue()
        eos = int(self.config.talker_config.codec_eos_token_id)
        talker = self.tts.model.talker
        self.progress = progress = Progress(max_frames=int(generate_kwargs["max_new_tokens"]))

        def before_step(_module: Any, _args: Any) -> None:
            if stop.is_set():
                raise _Stopped

        def after_step(_module: Any, _args: Any, output: Any) -> None:
            codes = output.hidden_states[1] if output.hidden_states is not None else None
            if codes is not None:
                frames.put(codes[0].detach().to("cpu"))

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.tts.model.generate(**generate_kwargs)
                frames.put(None)
            except _Stopped:
                frames.put(None)
            except BaseException as exc:
                frames.put(exc)

        hooks = [talker.register_forward_pre_hook(before_step), talker.register_forward_hook(after_step)]
        worker = threading.Thread(target=run, name="qwen3-generate", daemon=True)
        worker.start()
        try:
            context = prefix_codes[-CONTEXT_FRAMES:] if prefix_codes is not None else None
            pending: list[Any] = []
            first = True
            while True:
                item = frames.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item is None or int(item[0]) == eos
                if not finished:
                    pending.append(item)
                    progress.frames += 1
                want = FIRST_CHUNK_FRAMES if first else CHUNK_FRAMES
                if pending and (finished or len(pending) >= want):
                    audio, context = self._decode(pending, context)
                    pending = []
                    first = False
                    yield audio
                if finished:
                    return
        finally:
            progress.stopped = worker.is_alive()  # the consumer left while frames were still coming
            stop.set()
            worker.join()
            for hook in hooks:
                hook.remove()

    def _decode(self, new: list[Any], context: Any) -> tuple[Pcm, Any]:
        import torch

        window = torch.stack(new) if context is None else torch.cat([context, torch.stack(new)])
        wavs, _ = self.tts.model.speech_tokenizer.decode([{"audio_codes": window}])
        skip = (0 if context is None else len(context)) * self.samples_per_frame
        audio = np.asarray(wavs[0], dtype=np.float32)[skip:]
        return audio, window[-CONTEXT_FRAMES:]

    def _prepare(self, job: Job) -> tuple[dict[str, Any], Any]:
        """The upstream wrapper's prompt building, for any mode (the registry's mode decides)."""
        tts = self.tts
        input_ids = tts._tokenize_texts([tts._build_assistant_text(job.text)])
        instruct_ids = None
        if job.instruct:
            instruct_ids = [tts._tokenize_texts([tts._build_instruct_text(job.instruct)])[0]]
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "instruct_ids": instruct_ids,
            "languages": [job.language],
            "non_streaming_mode": job.mode != "base",  # upstream's per-mode defaults
            **tts._merge_generate_kwargs(**job.sampling),
        }
        if not kwargs["do_sample"]:
            kwargs["subtalker_dosample"] = False  # greedy means greedy for all 16 code groups
        prefix = None
        if job.mode == "base":
            if job.reference is None:
                raise ValueError("base mode needs a reference voice")
            item = self._clone_prompt(job.reference)
            kwargs["voice_clone_prompt"] = tts._prompt_items_to_voice_clone_prompt([item])
            if item.icl_mode:
                kwargs["ref_ids"] = [tts._tokenize_texts([tts._build_ref_text(item.ref_text)])[0]]
                prefix = item.ref_code
            else:
                kwargs["ref_ids"] = [None]
        elif job.mode == "custom_voice":
            kwargs["speakers"] = [job.speaker]
        return kwargs, prefix

    def _clone_prompt(self, reference: Reference) -> Any:
        item = self._prompts.get(reference.key)
        if item is None:
            xvec_only = reference.transcript is None
            (item,) = self.tts.create_voice_clone_prompt(
                ref_audio=(reference.audio, self.sample_rate),
                ref_text=reference.transcript,
                x_vector_only_mode=xvec_only,
            )
            if len(self._prompts) >= 16:
                self._prompts.pop(next(iter(self._prompts)))
            self._prompts[reference.key] = item
        return item


class FasterRuntime:
    """faster-qwen3-tts on CUDA (its CUDA-graph path refuses any other device)."""

    def __init__(self, model_dir: Path, device: str) -> None:
        import torch

        from talkies.engines.qwen3 import compat

        compat.prepare()
        from faster_qwen3_tts import FasterQwen3TTS

        self.model = FasterQwen3TTS.from_pretrained(str(model_dir), device=device, dtype=torch.bfloat16)
        log.info("capturing CUDA graphs for %s (warm-up)", model_dir.name)
        self.model.warmup()
        self.config = self.model.model.model.config
        self.sample_rate = 24_000
        self.progress = Progress()

    def close(self) -> None:
        self.model = None

    def stream(self, job: Job, stop: threading.Event) -> Iterator[Pcm]:
        sampling = dict(job.sampling)
        common = {k: v for k, v in sampling.items() if v is not None}
        if job.mode == "base":
            reference = job.reference
            if reference is None:
                raise ValueError("base mode needs a reference voice")
            chunks = self.model.generate_voice_clone_streaming(
                text=job.text,
                language=job.language,
                ref_audio=str(reference.wav),
                ref_text=reference.transcript or "",
                xvec_only=reference.transcript is None,
                instruct=job.instruct,
                chunk_size=CHUNK_FRAMES,
                **common,
            )
        elif job.mode == "custom_voice":
            chunks = self.model.generate_custom_voice_streaming(
                text=job.text,
                speaker=job.speaker,
                language=job.language,
                instruct=job.instruct,
                chunk_size=CHUNK_FRAMES,
                **common,
            )
        else:
            chunks = self.model.generate_voice_design_streaming(
                text=job.text,
                instruct=job.instruct or "",
                language=job.language,
                chunk_size=CHUNK_FRAMES,
                **common,
            )
        self.progress = progress = Progress(max_frames=int(common.get("max_new_tokens", 2048)))
        try:
            for audio, rate, _timing in chunks:
                if stop.is_set():
                    progress.stopped = True
                    return
                self.sample_rate = int(rate)
                progress.frames += max(1, round(len(audio) / (rate / 12.5)))
                yield np.asarray(audio, dtype=np.float32).reshape(-1)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
