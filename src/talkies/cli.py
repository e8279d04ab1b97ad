"""`talkies serve | models | download` (also `python -m talkies`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from talkies import __version__
from talkies.errors import ConfigError, TalkiesError
from talkies.settings import Settings, load_settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(settings: Settings) -> int:
    import uvicorn

    from talkies.api.app import create_app

    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # RequestContextMiddleware logs one line per request
        timeout_graceful_shutdown=10,
    )
    return 0


def _models(settings: Settings) -> int:
    from talkies.api.app import build_registry
    from talkies.device import resolve_device
    from talkies.engines import unavailable_reason
    from talkies.engines.snapshot import snapshot_present

    device = resolve_device(settings.device)
    registry = build_registry(settings, device)
    print(f"# {registry.path} (device {device})")
    for spec in registry.models.values():
        reason = unavailable_reason(spec, device)
        state = "ready" if reason is None else f"unavailable: {reason}"
        if reason is None and spec.repo and not snapshot_present(settings.models_dir / spec.slug):
            state = f"ready, snapshot not downloaded yet (talkies download {spec.slug})"
        print(f"{spec.slug:32} {spec.kind:3} {spec.executor:18} {state}")
    return 0


def _download(settings: Settings, slugs: Sequence[str]) -> int:
    from talkies.api.app import build_registry
    from talkies.device import resolve_device
    from talkies.engines import unavailable_reason
    from talkies.engines.snapshot import ensure_snapshot

    device = resolve_device(settings.device)
    registry = build_registry(settings, device)
    wanted = list(slugs) or list(registry.models)
    failed: list[str] = []
    for slug in wanted:
        spec = registry.get(slug)
        if spec is None:
            raise ConfigError(f"unknown model {slug!r}; enabled: {', '.join(registry.models)}")
        if not spec.repo:
            print(f"{slug}: weight-free, nothing to download")
            continue
        reason = unavailable_reason(spec, device)
        if reason and not slugs:  # prefetching everything: skip what could not run here anyway
            print(f"{slug}: skipped ({reason})")
            continue
        patterns = [spec.gguf_file] if spec.gguf_file else None
        try:
            path = ensure_snapshot(slug, spec.repo, settings.models_dir / slug, allow_patterns=patterns)
        except TalkiesError as exc:
            failed.append(slug)
            print(f"{slug}: FAILED: {exc.message}", file=sys.stderr)
            continue
        print(f"{slug}: {path}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkies", description="OpenAI-compatible speech server")
    parser.add_argument("--version", action="version", version=f"talkies {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (settings from TALKIES_* variables)")
    serve.add_argument("--host", help="overrides TALKIES_HOST")
    serve.add_argument("--port", type=int, help="overrides TALKIES_PORT")
    sub.add_parser("models", help="list the enabled models and whether each can run here")
    download = sub.add_parser("download", help="fetch model snapshots into $TALKIES_DATA_DIR/models/")
    download.add_argument("slugs", nargs="*", help="models to fetch (default: every enabled model)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        settings = load_settings(**overrides)
        _configure_logging(settings.log_level)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "models":
            return _models(settings)
        return _download(settings, args.slugs)
    except ConfigError as exc:
        print(f"talkies: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except TalkiesError as exc:
        print(f"talkies: {exc.message}", file=sys.stderr)
        return 1
