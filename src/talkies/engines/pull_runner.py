"""One model pull in a child process of its own, its progress as NDJSON on stdout:

    python -m talkies.engines.pull_runner --slug S --repo R --dir D [--pattern P ...] [--dependency X ...]
    python -m talkies.engines.pull_runner --list '[{"slug": S, "repo": R, "patterns": [P, ...]}, ...]'

What `talkies.services.pulls` starts for `POST /api/pull` and for a model's first use. A process of its
own because huggingface_hub reads its settings (HF_ENDPOINT, HF_HUB_OFFLINE, the token) from the
environment when it is imported, and because stopping the server must be able to stop a transfer at once:
the partial file stays on disk and the next pull resumes it.

Each line is one event of `pull_snapshot`'s progress (Ollama's shape), throttled so that a large file
sends a few lines a second: the first and the last line of each file are always sent. The last line is
`{"status": "success"}` (exit 0) or `{"error": "..."}` (exit 1).

`--list` downloads nothing: it reads each repository's listing and writes one line per model,
`{"slug": S, "download_bytes": N}` (the files its executor would fetch) or `{"slug": S, "error": "..."}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from talkies.engines.snapshot import list_repo_files, pull_dependency, pull_snapshot, select_files
from talkies.errors import TalkiesError

MIN_INTERVAL = 0.2
"""Seconds between two lines about the same file (its first and last lines are always sent)."""


class ThrottledLines:
    """Writes progress events as JSON lines, dropping the in-between lines of a fast transfer."""

    def __init__(self, out: TextIO, *, interval: float = MIN_INTERVAL) -> None:
        self.out = out
        self.interval = interval
        self._status = ""
        self._sent_at = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        between = "completed" in event and event["completed"] != event.get("total")
        if event["status"] == self._status and between and now - self._sent_at < self.interval:
            return
        self._status = event["status"]
        self._sent_at = now
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def error(self, message: str) -> None:
        self.out.write(json.dumps({"error": message}) + "\n")
        self.out.flush()


def list_sizes(models: list[dict[str, Any]], out: TextIO) -> None:
    for model in models:
        try:
            _, files = list_repo_files(str(model["repo"]))
            size = sum(f.size or 0 for f in select_files(files, model.get("patterns") or None))
            line: dict[str, Any] = {"slug": model["slug"], "download_bytes": size}
        except Exception as exc:  # unreachable, unknown repository, offline mode: the estimate stays
            line = {"slug": model["slug"], "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(line) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m talkies.engines.pull_runner")
    parser.add_argument("--list", help="JSON: the models whose download size to read from the hub")
    parser.add_argument("--slug")
    parser.add_argument("--repo")
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--pattern", action="append", default=[])
    parser.add_argument("--dependency", action="append", default=[])
    args = parser.parse_args(argv)
    if args.list is not None:
        list_sizes(json.loads(args.list), sys.stdout)
        return 0
    if not (args.slug and args.repo and args.dir):
        parser.error("--slug, --repo and --dir are required for a pull")
    lines = ThrottledLines(sys.stdout)
    try:
        pull_snapshot(
            args.slug,
            args.repo,
            args.dir,
            allow_patterns=args.pattern or None,
            progress=False,
            on_progress=lines,
        )
        for dependency in args.dependency:
            lines({"status": f"pulling dependency {dependency}"})
            pull_dependency(dependency)
    except TalkiesError as exc:
        lines.error(exc.message)
        return 1
    except Exception as exc:  # a dependency the hub refused, a full disk, ...
        lines.error(f"model {args.slug!r}: {type(exc).__name__}: {exc}")
        return 1
    lines({"status": "success"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
