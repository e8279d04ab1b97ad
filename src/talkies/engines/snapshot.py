"""Model snapshots: `$TALKIES_DATA_DIR/models/<slug>/`, a flat copy of the model's hub repository.

Engines call `ensure_snapshot()` at the start of `load()`. A snapshot already on disk is used as it is
(no network); otherwise `huggingface_hub.snapshot_download` fetches it, with its progress bars, into that
directory. When the hub cannot be reached (offline, HF_HUB_OFFLINE=1) the error says where the files must go.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from talkies.errors import EngineUnavailableError

log = logging.getLogger(__name__)


def snapshot_present(model_dir: Path) -> bool:
    return model_dir.is_dir() and any(p.name != ".cache" for p in model_dir.iterdir())


def ensure_snapshot(
    slug: str, repo: str | None, model_dir: Path, *, allow_patterns: Sequence[str] | None = None
) -> Path:
    """Return `model_dir`, downloading `repo` into it first when it is missing."""
    if snapshot_present(model_dir):
        return model_dir
    if not repo:
        raise EngineUnavailableError(f"model {slug!r} has no snapshot in {model_dir} and no 'repo' to fetch")
    from huggingface_hub import snapshot_download

    log.info("downloading %s into %s", repo, model_dir)
    try:
        snapshot_download(
            repo_id=repo,
            local_dir=str(model_dir),
            allow_patterns=list(allow_patterns) if allow_patterns else None,
        )
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineUnavailableError(
            f"model {slug!r}: no snapshot in {model_dir} and downloading {repo} failed ({reason}); "
            f"run `talkies download {slug}` where the hub is reachable, or copy the repository's files there"
        ) from exc
    return model_dir
