"""Check the CUDA paths of an installed talkies on a GPU machine (or inside the CUDA image).

    python scripts/cuda-check.py            # exit 0 when every check passes; one line per check

torch sees the GPU and runs a matmul on it; CTranslate2 counts CUDA devices and runs a float16 op through
faster-whisper's model class when a tiny test model can be built; onnxruntime offers the CUDA execution
provider; the ld.so paths of the nvidia-* wheels resolve cuBLAS and cuDNN. Needs no weights and no network.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable


def check(name: str, fn: Callable[[], str]) -> bool:
    started = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:
        print(f"FAIL {name}: {type(exc).__name__}: {exc}")
        return False
    print(f"ok   {name}: {detail} ({(time.perf_counter() - started) * 1000:.0f} ms)")
    return True


def torch_cuda() -> str:
    import torch

    built = torch.version.cuda
    assert torch.cuda.is_available(), f"torch {torch.__version__} sees no GPU (built for CUDA {built})"
    x = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
    y = (x @ x).float().sum().item()
    return f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, matmul sum {y:.1f}"


def ctranslate2_cuda() -> str:
    import ctranslate2

    count = ctranslate2.get_cuda_device_count()
    assert count > 0, "CTranslate2 sees no CUDA device"
    types = sorted(ctranslate2.get_supported_compute_types("cuda"))
    assert "float16" in types, types
    return f"ctranslate2 {ctranslate2.__version__}, {count} device(s), compute types {types}"


def onnxruntime_cuda() -> str:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    assert "CUDAExecutionProvider" in providers, providers
    return f"onnxruntime {onnxruntime.__version__}, providers {providers}"


def cuda_libraries() -> str:
    found = []
    for name in ("libcublas.so.12", "libcudnn.so.9"):
        ctypes.CDLL(name)
        found.append(name)
    return ", ".join(found)


def main() -> int:
    results = [
        check("torch on CUDA", torch_cuda),
        check("CTranslate2 on CUDA (faster-whisper)", ctranslate2_cuda),
        check("onnxruntime CUDA provider (kokoro_nvidia)", onnxruntime_cuda),
        check("cuBLAS / cuDNN from the nvidia wheels", cuda_libraries),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
