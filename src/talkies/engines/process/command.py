"""Command lines and ports for external servers: pure helpers, no process is started here."""

from __future__ import annotations

import shlex
import socket

from talkies.errors import ModelLoadError


def split_command(command: str | tuple[str, ...] | list[str]) -> list[str]:
    """An argv from a registry `cmd`: a list as given, or a string split as llama-swap does (lines whose
    first non-blank character is `#` dropped, a trailing backslash joins lines, POSIX shell quoting).
    No shell runs it: `sh -c '...'` must be written out by whoever wants one."""
    if not isinstance(command, str):
        return [str(part) for part in command]
    lines = []
    for line in command.split("\n"):
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        lines.append(stripped[:-1] + " " if stripped.endswith("\\") else line)
    try:
        argv = shlex.split("\n".join(lines), comments=False, posix=True)
    except ValueError as exc:
        raise ModelLoadError(f"cannot split the command {command!r}: {exc}") from None
    if not argv:
        raise ModelLoadError("the command is empty")
    return argv


def expand_runtime(text: str, *, port: int | None = None, pid: int | None = None) -> str:
    """Fill in the macros only known when the child runs: `${PORT}` and (for cmdStop) `${PID}`."""
    if port is not None:
        text = text.replace("${PORT}", str(port))
    if pid is not None:
        text = text.replace("${PID}", str(pid))
    return text


def uses_port(command: str | tuple[str, ...] | list[str]) -> bool:
    parts = [command] if isinstance(command, str) else list(command)
    return any("${PORT}" in part for part in parts)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(start: int | None = None, taken: frozenset[int] = frozenset()) -> int:
    """A TCP port nothing listens on: the first free one from `start` (llama-swap's `startPort`), else
    one the kernel picks. `taken` are ports other children of ours hold (they may not be listening yet)."""
    if start is not None:
        for port in range(start, min(start + 1000, 65536)):
            if port not in taken and _port_free(port):
                return port
        raise ModelLoadError(f"no free port in {start}..{min(start + 999, 65535)} (startPort)")
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
