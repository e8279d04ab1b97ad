"""Model snapshots: `$TALKIES_DATA_DIR/models/<slug>/`, the files of the model's hub repository it needs.

`pull_snapshot()` (what `talkies pull` runs) lists the repository's files with their sizes and hashes, keeps
the ones the executor reads (its allow-patterns, or the registry's `gguf_file`), and downloads each with a
progress bar, resuming a file an earlier run left half-way: the partial file is kept under
`.cache/talkies/` and the next pull asks for the rest with an HTTP Range request (huggingface_hub itself
restarts a file from zero in a new process). While it runs, `.talkies-pull.json` records what is
expected; only when every file is on disk with its expected size (and SHA-256, where the hub gives one)
is the completion marker `.talkies-complete.json` written and the record removed. So:

- a snapshot with the marker is complete;
- a snapshot with a pull record is incomplete (an interrupted pull), and never counts as present;
- a directory with neither, but with files, was laid out by hand (a copied snapshot): it counts as present,
  unverified, so offline users and the test fixtures keep working. `check_snapshot` holds it to the files
  its executor declares it needs (`required`: glob patterns, each matching at least one file; Whisper:
  `config.json`, `model.bin`, `tokenizer.json`, `vocabulary.*`): one that lacks any is incomplete, and the
  missing patterns are named (a load names them too, in the engine's words).

`check_snapshot()` (what `talkies pull --check` runs) compares the disk with the marker or the record and
names what is missing or the wrong size. Engines call `ensure_snapshot()` at the start of `load()`: a
present snapshot is used as it is (no network); otherwise it is pulled, and when the hub cannot be reached
the error says where the files must go.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkies.errors import EngineUnavailableError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".talkies-complete.json"
PULL_RECORD = ".talkies-pull.json"
_IGNORED = {".cache", COMPLETE_MARKER, PULL_RECORD}

Progress = Callable[[dict[str, Any]], None]
"""Receives a pull's progress in Ollama's shape: `{"status": "pulling manifest"}`, then per file
`{"status": "pulling <file>", "digest": ..., "total": bytes, "completed": bytes}` (repeated as bytes
arrive), `{"status": "verifying sha256 digest"}`, `{"status": "writing manifest"}`."""


@dataclass(frozen=True, slots=True)
class RepoFile:
    name: str
    size: int | None
    sha256: str | None = None


@dataclass(slots=True)
class SnapshotState:
    """What `check_snapshot` found."""

    status: str  # "complete", "incomplete", "unverified" (laid out by hand), "missing"
    missing: list[str] = field(default_factory=list)  # files absent or of the wrong size
    files: int = 0
    bytes: int = 0
    by_hand: bool = False  # no marker, no pull record: laid out by hand

    @property
    def present(self) -> bool:
        return self.status in ("complete", "unverified")


def _content(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        return []
    return [p for p in model_dir.iterdir() if p.name not in _IGNORED]


def snapshot_present(model_dir: Path, required: Sequence[str] = ()) -> bool:
    """Complete (marker written), or laid out by hand with every `required` file; never a pull that did
    not finish."""
    if (model_dir / COMPLETE_MARKER).is_file():
        return True
    if (model_dir / PULL_RECORD).exists() or not _content(model_dir):
        return False
    return not missing_required(model_dir, required)


def missing_required(model_dir: Path, required: Sequence[str]) -> list[str]:
    """The `required` glob patterns nothing in `model_dir` matches."""
    return [pattern for pattern in required if not any(model_dir.glob(pattern))]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_snapshot(model_dir: Path, required: Sequence[str] = ()) -> SnapshotState:
    """Compare what is on disk with what the last pull expected (sizes only: hashing is the pull's job); a
    directory laid out by hand, with what its executor requires."""
    record = _read_json(model_dir / COMPLETE_MARKER)
    status = "complete"
    if record is None:
        record = _read_json(model_dir / PULL_RECORD)
        status = "incomplete"
    if record is None:
        content = _content(model_dir)
        if not content:
            return SnapshotState("missing")
        files = [p for p in model_dir.rglob("*") if p.is_file() and not _ignored(model_dir, p)]
        absent = missing_required(model_dir, required)
        return SnapshotState(
            "incomplete" if absent else "unverified",
            missing=absent,
            files=len(files),
            bytes=sum(p.stat().st_size for p in files),
            by_hand=True,
        )
    missing = []
    total = 0
    expected = record.get("files", {})
    for name, meta in expected.items():
        path = model_dir / name
        size = meta.get("size")
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            missing.append(name)
        else:
            total += path.stat().st_size
    if missing and status == "complete":
        status = "incomplete"  # a file went missing after the pull
    return SnapshotState(status, missing=sorted(missing), files=len(expected), bytes=total)


def _ignored(root: Path, path: Path) -> bool:
    return path.relative_to(root).parts[0] in _IGNORED


def select_files(files: Sequence[RepoFile], patterns: Sequence[str] | None) -> list[RepoFile]:
    """The repository files an executor needs: all of them, or those matching any pattern."""
    if not patterns:
        return [f for f in files if not f.name.startswith(".")]
    return [f for f in files if any(fnmatch.fnmatch(f.name, p) for p in patterns)]


def list_repo_files(repo: str) -> tuple[str, list[RepoFile]]:
    """(commit, files with size and SHA-256 when the hub gives them) of `repo`'s main revision."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, files_metadata=True)
    files = [
        RepoFile(
            name=sibling.rfilename,
            size=sibling.lfs.size if sibling.lfs else sibling.size,
            sha256=sibling.lfs.sha256 if sibling.lfs else None,
        )
        for sibling in info.siblings or []
    ]
    return str(info.sha), files


def pull_snapshot(
    slug: str,
    repo: str,
    model_dir: Path,
    *,
    allow_patterns: Sequence[str] | None = None,
    progress: bool = True,
    on_progress: Progress | None = None,
) -> Path:
    """Fetch what `slug` needs from `repo` into `model_dir`, resuming, verifying, then marking it complete.
    Raises EngineUnavailableError naming the problem (hub unreachable, a file of the wrong size or hash).
    `progress` draws tqdm bars on stderr; `on_progress` receives the same progress as events."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]
    from tqdm.auto import tqdm

    report = on_progress or _ignore
    report({"status": "pulling manifest"})
    try:
        commit, listed = list_repo_files(repo)
    except Exception as exc:
        raise _unreachable(slug, repo, model_dir, exc) from exc
    files = select_files(listed, allow_patterns)
    if not files:
        patterns = ", ".join(allow_patterns or ())
        raise EngineUnavailableError(f"model {slug!r}: no file of {repo} matches {patterns}")
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    record = {
        "repo": repo,
        "revision": commit,
        "files": {f.name: {"size": f.size, "sha256": f.sha256} for f in files},
    }
    _write_json(model_dir / PULL_RECORD, record)
    total = sum(f.size or 0 for f in files)
    report({"status": "pulling manifest", "files": len(files), "download_bytes": total})
    bar = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "disable": not progress}
    with tqdm(total=total, desc=f"{slug} (all files)", **bar) as overall:
        for item in files:
            target = model_dir / item.name
            if target.is_file() and item.size is not None and target.stat().st_size == item.size:
                overall.update(item.size)
                report(_file_event(item, item.size))
                continue
            log.info("pulling %s/%s", repo, item.name)
            url = hf_hub_url(repo, item.name, revision=commit)
            try:
                _fetch(url, target, item, build_hf_headers(), overall, bar, report)
            except Exception as exc:
                raise _unreachable(slug, repo, model_dir, exc) from exc
    report({"status": "verifying sha256 digest"})
    bad = [problem for item in files if (problem := _verify(model_dir / item.name, item))]
    if bad:
        raise EngineUnavailableError(
            f"model {slug!r}: pulled files do not match {repo}: {'; '.join(bad)}; "
            f"run `talkies pull {slug}` again"
        )
    report({"status": "writing manifest"})
    _write_json(model_dir / COMPLETE_MARKER, record)
    (model_dir / PULL_RECORD).unlink(missing_ok=True)
    log.info("%s: %d files, %.1f MiB, complete", slug, len(files), total / 2**20)
    return model_dir


def _ignore(event: dict[str, Any]) -> None:
    pass


def _file_event(item: RepoFile, completed: int) -> dict[str, Any]:
    event: dict[str, Any] = {"status": f"pulling {item.name}"}
    if item.sha256:
        event["digest"] = f"sha256:{item.sha256}"
    event["total"] = item.size if item.size is not None else completed
    event["completed"] = completed
    return event


def _fetch(
    url: str,
    target: Path,
    item: RepoFile,
    headers: dict[str, str],
    overall: Any,
    bar: dict[str, Any],
    report: Progress = _ignore,
) -> None:
    """Download `url` to `target` through `.cache/talkies/<name>.part`, continuing a part an earlier run
    left (Range request); each MiB is written as it arrives so a kill loses at most that."""
    import httpx
    from tqdm.auto import tqdm

    part = target.parent / ".cache" / "talkies" / f"{target.name}.part"
    for parent in (part.parent, target.parent):
        parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if item.size is not None and have > item.size:
        have = 0
    request_headers = dict(headers, **({"Range": f"bytes={have}-"} if have else {}))
    overall.update(have)
    report(_file_event(item, have))
    timeout = httpx.Timeout(30.0, read=300.0)
    with (
        httpx.stream("GET", url, headers=request_headers, follow_redirects=True, timeout=timeout) as response,
        tqdm(total=item.size, initial=have, desc=item.name, leave=False, **bar) as file_bar,
    ):
        if response.status_code == 416 and have == item.size:
            pass  # the part was already whole
        else:
            response.raise_for_status()
            if response.status_code != 206 and have:
                overall.update(-have)  # the server ignored the Range: start over
                file_bar.reset()
                have = 0
                report(_file_event(item, 0))
            with part.open("ab" if have else "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    out.flush()
                    overall.update(len(chunk))
                    file_bar.update(len(chunk))
                    have += len(chunk)
                    report(_file_event(item, have))
    os.replace(part, target)


def _verify(path: Path, item: RepoFile) -> str | None:
    if not path.is_file():
        return f"{item.name} is missing"
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        return f"{item.name} has {size} bytes, expected {item.size}"
    if item.sha256:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != item.sha256:
            path.unlink()  # a corrupt file must be fetched again, not resumed
            return f"{item.name} has SHA-256 {digest.hexdigest()[:12]}..., expected {item.sha256[:12]}..."
    return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _unreachable(slug: str, repo: str, model_dir: Path, exc: Exception) -> EngineUnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return EngineUnavailableError(
        f"model {slug!r}: no complete snapshot in {model_dir} and fetching {repo} failed ({reason}); "
        f"run `talkies pull {slug}` where the hub is reachable, or copy the repository's files there"
    )


def pull_dependency(repo: str) -> Path:
    """A repository another model loads by name (registry `dependencies`): into the Hugging Face cache.
    `org/name:path/in/repo` fetches that one file (a model that needs one file of a large repository)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    name, _, filename = repo.partition(":")
    if filename:
        return Path(hf_hub_download(repo_id=name, filename=filename))
    return Path(snapshot_download(repo_id=repo))


def ensure_snapshot(
    slug: str, repo: str | None, model_dir: Path, *, allow_patterns: Sequence[str] | None = None
) -> Path:
    """Return `model_dir`, pulling `repo` into it first when no complete snapshot is there. A directory laid
    out by hand is used as it is: the engine's load names what it lacks (`talkies pull --check` too)."""
    if snapshot_present(model_dir):
        return model_dir
    if not repo:
        raise EngineUnavailableError(f"model {slug!r} has no snapshot in {model_dir} and no 'repo' to fetch")
    log.info("pulling %s into %s", repo, model_dir)
    return pull_snapshot(slug, repo, model_dir, allow_patterns=allow_patterns)
