"""A native crash leaves evidence: `talkies serve` enables faulthandler, so a fatal signal writes every
thread's Python stack to the log instead of a bare "Segmentation fault"."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.live_server import live_server

pytestmark = pytest.mark.slow


def test_a_fatal_signal_dumps_every_threads_stack_to_the_log(tmp_path: Path) -> None:
    with live_server(tmp_path, {"espeak-ng": {"executor": "espeak"}}) as server:
        server.process.send_signal(signal.SIGSEGV)
        server.process.wait(30)
        log = server.log()
    assert server.process.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in log, log[-3000:]
    assert "most recent call first" in log  # a Python stack, per thread
    assert "Thread 0x" in log or "Current thread 0x" in log, log[-3000:]
