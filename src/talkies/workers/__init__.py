"""The worker-process host: runs an engine in a worker process of its own, behind a proxy that the pool treats
like the engine itself. Not an engine: it hosts any of them.

- `engine`: the proxies (`ProcessEngine` and its Transcriber / Synthesizer shapes) and `start_helpers`.
- `link`: one worker process, its pipe and the calls multiplexed over it.
- `worker`: the code that runs inside the worker process.
- `ipc`: what crosses the pipe (messages, errors, shared-memory audio blocks).
"""

from talkies.workers.engine import (
    ProcessDuplex,
    ProcessEngine,
    ProcessSynthesizer,
    ProcessTranscriber,
    start_helpers,
)

__all__ = ["ProcessDuplex", "ProcessEngine", "ProcessSynthesizer", "ProcessTranscriber", "start_helpers"]
