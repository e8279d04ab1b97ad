"""Resolve TALKIES_DEVICE=auto without importing torch (start-up stays fast and torch-free)."""

from __future__ import annotations

import os
from pathlib import Path


def cuda_present() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return Path("/dev/nvidiactl").exists() and (not gpus.exists() or any(gpus.iterdir()))


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    return "cuda" if cuda_present() else "cpu"
