"""The `parakeet_cpp` executor: Parakeet-family speech-to-text on a plain CPU, without PyTorch.

`engine.py` runs NeMo FastConformer TDT / RNNT / CTC checkpoints exported to ONNX (the `onnx-asr` layout)
on onnxruntime; `timeline.py` turns the decoder's tokens into words, Whisper-shape segments and a
language. The executor keeps the contract's name (`parakeet_cpp`) although the runtime is not the
contract's C++ `libparakeet.so`: see docs/parakeet-cpp.md for why and what differs.
"""
