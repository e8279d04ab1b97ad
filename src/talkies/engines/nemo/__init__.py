"""NVIDIA NeMo speech-to-text: three executors on one restore / batching base.

- `base.NemoEngine`: offline `.nemo` restore, device and dtype, languages, VAD regions cut and batched.
- `parakeet.ParakeetEngine`: the `parakeet` executor (TDT / RNNT / CTC / hybrid; word timestamps).
- `canary.CanaryEngine`: the `canary_multitask` executor (prompted ASR and translation; slugs on one
  repository share the weights).
- `salm.CanarySalmEngine`: the `canary_salm` executor (Canary-Qwen: speech encoder + Qwen LLM; no
  alignment).

NeMo itself is imported only inside `load()`; without it the executors answer 503 naming the `nemo` extra.
"""
