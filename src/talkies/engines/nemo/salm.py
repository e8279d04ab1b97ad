"""The `canary_salm` executor: Canary-Qwen (NeMo speechlm2 SALM: FastConformer encoder + Qwen LLM).

The snapshot (`nvidia/canary-qwen-2.5b`) holds the SALM's `config.json` and `model.safetensors`; the
config names the LLM repository (`pretrained_llm`, e.g. `Qwen/Qwen3-1.7B`) whose config and tokenizer
build the decoder. That repository is a registry `dependencies` entry: `talkies download` fetches it
into the Hugging Face cache (HF_HOME), and `load()` finds it there without the network (a missing one is
a 503 saying to run `talkies download <slug>`). The weights of every part come from the snapshot.

The SALM is prompted "Transcribe the following: <audio>" and answers text only: there is no alignment,
so results are unaligned (`verbose_json` has empty `segments` / `words`, `srt` / `vtt` one cue for the
whole file), and a long file's VAD regions are decoded in batches and their texts joined with a space.

Engine options: `nemo_batch_size` (regions per `generate()` call); `max_new_tokens` (default: 8 per
second of the longest clip + 16, enough for fast English speech).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from talkies.engines.base import ASR_SAMPLE_RATE, TranscriptionRequest, TranscriptionResult
from talkies.engines.nemo.base import LoadedNemo, NemoEngine, quiet_nemo
from talkies.errors import CapabilityError, EngineUnavailableError, ModelLoadError

log = logging.getLogger(__name__)

PROMPT = "Transcribe the following: "
TOKENS_PER_SECOND = 8
TOKENS_MARGIN = 16


class CanarySalmEngine(NemoEngine):
    """Transcriber on Canary-Qwen (see the module docstring). Unaligned by design."""

    snapshot_patterns = ("*.json", "*.safetensors", "*.md")
    required_files = ("config.json", "*.safetensors")
    can_translate = False

    def _load(self, model_dir: Path) -> LoadedNemo:
        cfg = json.loads((model_dir / "config.json").read_text())
        for key in ("pretrained_llm", "tokenizer_path"):
            if isinstance(cfg.get(key), str):
                cfg[key] = self._local_repo(cfg[key])
        cfg["pretrained_weights"] = False  # every weight comes from this snapshot
        dtype = self.pick_dtype()
        import torch
        from nemo.collections.speechlm2.models import SALM
        from safetensors.torch import load_file

        quiet_nemo()
        if self.context.cpu_threads:
            torch.set_num_threads(self.context.cpu_threads)
        try:
            model = SALM(cfg)
            state: dict[str, Any] = {}
            for shard in sorted(model_dir.glob("*.safetensors")):
                state.update(load_file(str(shard), device=self.torch_device))
            outcome = model.load_state_dict(state, strict=False)
            tied = [key for key in outcome.missing_keys if key.endswith("lm_head.weight")]
            if tied and getattr(model.llm.config, "tie_word_embeddings", False):
                # A tied LM head is saved once, as the embedding (which SALM keeps outside the LLM).
                model.llm.lm_head.weight = model.embed_tokens.weight
            missing = [key for key in outcome.missing_keys if key not in tied]
            if missing or outcome.unexpected_keys:
                raise RuntimeError(
                    f"weights do not match the config: missing {missing[:5]}, "
                    f"unexpected {outcome.unexpected_keys[:5]}"
                )
        except Exception as exc:
            raise ModelLoadError(
                f"model {self.spec.slug!r} failed to load from {model_dir}: {type(exc).__name__}: {exc}"
            ) from exc
        model = model.to(self.torch_device).eval()
        if dtype != "float32":
            model.to(dtype=getattr(torch, dtype))
            model.perception.preprocessor.float()
        log.info(
            "%s: SALM on %s (%s), LLM from %s",
            self.spec.slug,
            self.torch_device,
            dtype,
            cfg["pretrained_llm"],
        )
        return LoadedNemo(model=model, dtype=dtype, lock=threading.Lock())

    def _local_repo(self, name: str) -> str:
        """A hub repository id -> its snapshot in the Hugging Face cache (never the network)."""
        if Path(name).exists() or name.count("/") != 1:
            return name
        from huggingface_hub import snapshot_download

        try:
            return str(snapshot_download(repo_id=name, local_files_only=True))
        except Exception as exc:
            listed = (
                "" if name in self.spec.dependencies else f" (add {name!r} to its registry `dependencies`)"
            )
            raise EngineUnavailableError(
                f"model {self.spec.slug!r} needs {name} in the Hugging Face cache{listed}; "
                f"run `talkies download {self.spec.slug}` where the hub is reachable"
            ) from exc

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        if request.task == "translate":
            raise CapabilityError(f"model {self.spec.slug!r} transcribes only; it cannot translate")
        language = (
            self.validate_language(request.language) or self.spec.default_source_lang or self.only_language
        )
        duration = len(request.audio) / ASR_SAMPLE_RATE
        clips = [clip for _, clip in self.cut_regions(request.audio, request.regions)]
        texts: list[str] = []
        with self.running() as model:
            for start in range(0, len(clips), self.batch_size):
                texts.extend(self._generate(model, clips[start : start + self.batch_size]))
        return TranscriptionResult(
            text=" ".join(t for t in texts if t), language=language, duration=duration, aligned=False
        )

    def _generate(self, model: Any, clips: list[Any]) -> list[str]:
        import torch

        longest = max(len(clip) for clip in clips)
        audios = torch.zeros(len(clips), longest, dtype=torch.float32)
        for row, clip in enumerate(clips):
            audios[row, : len(clip)] = torch.from_numpy(np.asarray(clip))
        lens = torch.tensor([len(clip) for clip in clips], dtype=torch.int64)
        limit = self.context.options.get("max_new_tokens")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            limit = math.ceil(longest / ASR_SAMPLE_RATE * TOKENS_PER_SECOND) + TOKENS_MARGIN
        prompt = [{"role": "user", "content": f"{PROMPT}{model.audio_locator_tag}"}]
        from transformers import GenerationConfig

        generation = GenerationConfig(  # type: ignore[no-untyped-call]
            bos_token_id=model.text_bos_id,
            eos_token_id=model.text_eos_id,
            pad_token_id=model.text_pad_id,
            max_new_tokens=limit,
            do_sample=False,
        )
        answers = model.generate(
            prompts=[prompt] * len(clips),
            audios=audios.to(model.device),
            audio_lens=lens.to(model.device),
            generation_config=generation,
        )
        log.debug("%s: generated %s tokens", self.spec.slug, [len(row) for row in answers])
        specials = {model.text_eos_id, model.text_pad_id}
        return [
            model.tokenizer.ids_to_text([int(t) for t in row.tolist() if int(t) not in specials]).strip()
            for row in answers
        ]
