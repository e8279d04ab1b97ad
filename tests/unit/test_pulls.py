"""The pieces of a server-side pull that need no hub: the runner's throttled NDJSON lines, what a late joiner
of a pull sees, and where `download_bytes` comes from (registry estimate, then the hub listing on disk)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from talkies.engines.pull_runner import ThrottledLines
from talkies.engines.snapshot import COMPLETE_MARKER, PULL_RECORD
from talkies.registry import load_registry
from talkies.services.pulls import Pull, PullManager
from tests.conftest import write_registry


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_runner_lines_keep_each_files_first_and_last_progress() -> None:
    out = io.StringIO()
    lines = ThrottledLines(out, interval=3600)  # nothing in between is ever due
    lines({"status": "pulling manifest"})
    lines({"status": "pulling manifest", "files": 2, "download_bytes": 30})
    for completed in (0, 5, 10, 20):
        lines({"status": "pulling a.bin", "total": 20, "completed": completed})
    for completed in (0, 10):
        lines({"status": "pulling b.json", "total": 10, "completed": completed})
    lines.error("model 'x': boom")
    assert _lines(out) == [
        {"status": "pulling manifest"},
        {"status": "pulling manifest", "files": 2, "download_bytes": 30},  # not a byte count: never dropped
        {"status": "pulling a.bin", "total": 20, "completed": 0},
        {"status": "pulling a.bin", "total": 20, "completed": 20},
        {"status": "pulling b.json", "total": 10, "completed": 0},
        {"status": "pulling b.json", "total": 10, "completed": 10},
        {"error": "model 'x': boom"},
    ]


def test_a_late_joiner_sees_the_latest_line_per_file_in_order() -> None:
    pull = Pull("m", "api")
    pull.add({"status": "pulling manifest"})
    pull.add({"status": "pulling a", "total": 4, "completed": 1})
    seen_by_first = pull.since(0)[-1][0]
    pull.add({"status": "pulling a", "total": 4, "completed": 4})
    pull.add({"status": "pulling b", "total": 2, "completed": 0})
    late = [event for _, event in pull.since(0)]
    assert late == [
        {"status": "pulling manifest"},
        {"status": "pulling a", "total": 4, "completed": 4},
        {"status": "pulling b", "total": 2, "completed": 0},
    ]
    assert [event for _, event in pull.since(seen_by_first)] == late[1:]


def test_download_bytes_is_the_estimate_until_a_listing_is_on_disk(tmp_path: Path) -> None:
    registry = load_registry(
        write_registry(
            tmp_path / "models.json",
            {
                "w": {"executor": "whisper", "repo": "acme/w", "download_bytes": 1000},
                "n": {"executor": "whisper", "repo": "acme/n"},
                "e": {"executor": "espeak"},
            },
        )
    )
    pulls = PullManager(registry, tmp_path / "models")
    w, n, e = (registry.models[s] for s in ("w", "n", "e"))
    assert (pulls.download_bytes(w), pulls.download_bytes(n), pulls.download_bytes(e)) == (1000, None, 0)
    assert (pulls.installed(w), pulls.installed(e)) == (False, True)

    model_dir = tmp_path / "models" / "w"
    model_dir.mkdir(parents=True)
    record = {"files": {"model.bin": {"size": 700, "sha256": None}, "config.json": {"size": 12}}}
    (model_dir / PULL_RECORD).write_text(json.dumps(record))
    (model_dir / "config.json").write_text("{}")
    assert pulls.download_bytes(w) == 712  # the hub's listing, recorded when the pull began
    assert pulls.installed(w) is False  # an unfinished pull never counts
    (model_dir / PULL_RECORD).unlink()
    (model_dir / COMPLETE_MARKER).write_text(json.dumps(record))
    assert pulls.download_bytes(w) == 712
    assert pulls.installed(w) is True
