"""Kokoro-82M in two runtimes sharing one voice catalog and one sentence pipeline.

- `base.KokoroBase`: catalog, voice blends, sentence chunking, crossfaded joins.
- `pytorch.KokoroEngine`: the `kokoro` executor (KModel + misaki G2P).
- `onnx.KokoroOnnxEngine`: the `kokoro_nvidia` executor (onnxruntime, no torch).
- `voices`: the 41-voice catalog and blend parsing.
"""
