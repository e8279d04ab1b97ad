"""Memory figures for the pool's residency budget (TALKIES_MEMORY_BUDGET).

The budget counts one resource: system memory on CPU, GPU memory on CUDA. A model's footprint in it is
measured once it has loaded (its worker's RSS, or the server's RSS growth during an in-process load; on
CUDA the GPU memory its worker or the load took) and estimated before its first load from the size of
its snapshot on disk. Weight-free engines (espeak-ng, pocketsphinx, an external process) count a small
constant until measured.

Nothing here imports torch or an engine: GPU figures come from `nvidia-smi`, and from torch only when
the server process already imported it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

MIB = 1024 * 1024
GIB = 1024 * MIB

DEFAULT_SHARE = 0.8
"""Default budget: this share of the memory available when the server starts (GPU memory on CUDA)."""
WEIGHT_FREE_BYTES = 32 * MIB
"""Footprint counted for a weight-free engine before it was measured, and the least any model counts."""
SNAPSHOT_FACTOR = 1.2
"""Estimated footprint = snapshot bytes on disk x this (runtime buffers) + RUNTIME_BYTES."""
RUNTIME_BYTES = 64 * MIB

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MIB, "g": GIB, "t": 1024 * GIB}
BUDGET_FORM = "bytes (8G, 512M, 1.5GiB, 2000000000) or a percentage of the memory available at start (60%)"


def parse_budget(value: str) -> tuple[int | None, float | None]:
    """ "8G" -> (8 GiB, None); "60%" -> (None, 0.6); "" -> (None, None) (the default share).

    Raises ValueError naming the accepted form."""
    text = value.strip().lower()
    if not text:
        return None, None
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError(f"expected {BUDGET_FORM}") from None
        if not 0 < percent <= 100:
            raise ValueError(f"expected {BUDGET_FORM}; a percentage is above 0 and at most 100")
        return None, percent / 100
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected {BUDGET_FORM}")
    number, unit, _ = match.groups()
    size = int(float(number) * _UNITS[unit.lower()])
    if size <= 0:
        raise ValueError(f"expected {BUDGET_FORM}, not zero")
    return size, None


def available_memory(device: str) -> int | None:
    """Bytes free now in the resource the budget counts: GPU memory on CUDA, else system memory."""
    if device.startswith("cuda"):
        free = gpu_free_memory(device)
        if free is not None:
            return free
        log.warning("memory budget: the free GPU memory is not known (no nvidia-smi); using system memory")
    return system_available_memory()


def system_available_memory() -> int | None:
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None
    return int(psutil.virtual_memory().available)


def resolve_budget(value: str, device: str) -> int | None:
    """The budget in bytes for TALKIES_MEMORY_BUDGET=`value` on `device`; None: not known (no limit)."""
    size, share = parse_budget(value)
    if size is not None:
        return size
    available = available_memory(device)
    if available is None:
        log.warning("memory budget: available memory not known; models are limited by count only")
        return None
    return int(available * (share if share is not None else DEFAULT_SHARE))


def _gpu_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def _nvidia_smi(*args: str) -> list[str] | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, *args, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def gpu_free_memory(device: str) -> int | None:
    index = _gpu_index(device)
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info(index)[0])
        except Exception:
            pass
    return _gpu_query_mib("memory.free", index)


def gpu_used_memory(device: str) -> int | None:
    """GPU memory in use on the device, by every process (for an in-process load's growth)."""
    return _gpu_query_mib("memory.used", _gpu_index(device))


def _gpu_query_mib(field: str, index: int) -> int | None:
    """One nvidia-smi `--query-gpu` field of GPU `index`, reported in MiB, as bytes; None when not known."""
    lines = _nvidia_smi(f"--query-gpu={field}", f"--id={index}")
    try:
        return int(float(lines[0])) * MIB if lines else None
    except ValueError:
        return None


def gpu_memory_of(pid: int) -> int | None:
    """GPU memory a process holds (nvidia-smi's compute apps); None when not known."""
    lines = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if lines is None:
        return None
    total = 0
    for line in lines:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid):
            try:
                total += int(float(fields[1])) * MIB
            except ValueError:
                continue
    return total


def snapshot_bytes(model_dir: Path) -> int:
    """Bytes of the files under a model's snapshot folder (0 when it is not there)."""
    total = 0
    for root, _, files in os.walk(model_dir):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


def estimate_footprint(model_dir: Path, *, needs_repo: bool) -> int:
    """A model's footprint before its first load: its snapshot size with room for runtime buffers."""
    if not needs_repo:
        return WEIGHT_FREE_BYTES
    on_disk = snapshot_bytes(model_dir)
    if on_disk == 0:
        return WEIGHT_FREE_BYTES  # not downloaded yet: measured after its load
    return int(on_disk * SNAPSHOT_FACTOR) + RUNTIME_BYTES


def rss_of(pid: int) -> int | None:
    from talkies.workers.link import process_rss

    return process_rss(pid)


def format_bytes(size: int | float) -> str:
    if size >= GIB:
        return f"{size / GIB:.2f} GiB"
    return f"{size / MIB:.0f} MiB"


class MemoryBudget:
    """The budget in bytes (None: not known, no limit) and each model's measured footprint."""

    def __init__(self, budget: int | None, device: str) -> None:
        self.budget = budget
        self.device = device
        self.measured: dict[str, int] = {}

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def usage_now(self) -> int | None:
        """What an in-process load grows: the server's RSS, or the GPU memory used on CUDA."""
        return gpu_used_memory(self.device) if self.on_gpu else rss_of(os.getpid())

    def measure(self, engine: object, before: int | None) -> int | None:
        """A loaded engine's footprint: its worker's RSS (GPU memory on CUDA), a figure the engine gives
        itself (`memory_bytes()`), else how much the server grew during the load."""
        pid = getattr(engine, "worker_pid", None)
        value: int | None
        if isinstance(pid, int):
            value = gpu_memory_of(pid) if self.on_gpu else rss_of(pid)
        else:
            own = getattr(engine, "memory_bytes", None)
            value = own() if callable(own) else None
            if value is None:
                after = self.usage_now()
                value = None if after is None or before is None else after - before
        return None if value is None else max(int(value), WEIGHT_FREE_BYTES)
