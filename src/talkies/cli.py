"""`talkies serve | models | pull` (`download` is an alias of `pull`; also `python -m talkies`)."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from talkies import __version__
from talkies.errors import ConfigError, TalkiesError
from talkies.logs import configure_logging
from talkies.settings import Settings, load_settings

if TYPE_CHECKING:
    from talkies.engines.snapshot import SnapshotState


def _serve(settings: Settings) -> int:
    import faulthandler

    import uvicorn

    # A native crash (SIGSEGV, SIGABRT, ... in libav, an engine library) leaves every thread's Python
    # stack in the log instead of a bare "Segmentation fault".
    faulthandler.enable(file=sys.stderr, all_threads=True)

    from talkies.api.app import create_app
    from talkies.api.lifecycle import GracefulServer

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # RequestContextMiddleware logs one line per request
        # GracefulServer drains for up to TALKIES_SHUTDOWN_GRACE before uvicorn's own shutdown starts, and
        # then shortens this to 1 s; it applies as such only to an exit uvicorn starts by itself.
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace)),
    )
    server = GracefulServer(config, lifecycle=app.state.lifecycle, grace=settings.shutdown_grace)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE: the lifespan or the bind failed


def _serve_on_ray(settings: Settings, address: str | None) -> int:
    try:
        from talkies.ray.app import serve_forever
    except ImportError as exc:
        raise ConfigError(f"--ray needs the Ray extra: pip install 'talkies[ray]' ({exc})") from None
    return serve_forever(settings, address)


def _models(settings: Settings) -> int:
    from talkies.api.app import build_registry
    from talkies.device import resolve_device
    from talkies.engines import required_files, unavailable_reason
    from talkies.engines.snapshot import snapshot_present

    device = resolve_device(settings.device)
    registry = build_registry(settings, device)
    print(f"# {registry.path} (device {device})")
    for spec in registry.models.values():
        reason = unavailable_reason(spec, device)
        state = "ready" if reason is None else f"unavailable: {reason}"
        model_dir = settings.models_dir / spec.slug
        if reason is None and spec.repo and not snapshot_present(model_dir, required_files(spec)):
            state = f"ready, snapshot not pulled yet (talkies pull {spec.slug})"
        print(f"{spec.slug:32} {spec.kind:3} {spec.executor:18} {state}")
    return 0


def _pull(settings: Settings, slugs: Sequence[str], *, check: bool) -> int:
    """`talkies pull [slug ...]` (alias `download`): fetch, resume, verify; `--check`: report only."""
    from talkies.api.app import build_registry
    from talkies.device import resolve_device
    from talkies.engines import required_files, snapshot_patterns, unavailable_reason
    from talkies.engines.snapshot import check_snapshot, pull_dependency, pull_snapshot

    device = resolve_device(settings.device)
    registry = build_registry(settings, device)
    wanted = list(slugs) or list(registry.models)
    failed: list[str] = []
    for name in wanted:
        spec = registry.get(name)
        if spec is None:
            raise ConfigError(f"unknown model {name!r}; enabled: {', '.join(registry.models)}")
        slug = spec.slug
        if not spec.repo:
            print(f"{slug}: weight-free, nothing to pull")
            continue
        model_dir = settings.models_dir / slug
        state = check_snapshot(model_dir, required_files(spec))
        if check:
            print(_check_line(slug, state))
            if state.status in ("incomplete", "missing"):
                failed.append(slug)
            continue
        reason = unavailable_reason(spec, device)
        if reason and not slugs:  # pulling everything: skip what could not run here anyway
            print(f"{slug}: skipped ({reason})")
            continue
        if state.status == "complete":
            print(f"{slug}: complete ({state.files} files), {model_dir}")
            continue
        try:
            pull_snapshot(slug, spec.repo, model_dir, allow_patterns=snapshot_patterns(spec))
            for dependency in spec.dependencies:
                print(f"{slug}: dependency {dependency}: {pull_dependency(dependency)}")
        except TalkiesError as exc:
            failed.append(slug)
            print(f"{slug}: FAILED: {exc.message}", file=sys.stderr)
            continue
        except Exception as exc:  # a dependency the hub refused, a full disk, ...
            failed.append(slug)
            print(f"{slug}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        print(f"{slug}: complete, {model_dir}")
    if failed:
        verb = "incomplete" if check else "failed"
        print(f"talkies: {verb}: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _check_line(slug: str, state: SnapshotState) -> str:
    line = f"{slug}: {state.status}"
    if state.status == "complete":
        line += f" ({state.files} files, {state.bytes / 2**20:.1f} MiB)"
    elif state.status == "unverified":
        line += f" (laid out by hand, {state.files} files; `talkies pull {slug}` verifies it)"
    elif state.status == "missing":
        line += f" (`talkies pull {slug}`)"
    elif state.by_hand:  # incomplete, laid out by hand
        return (
            f"{line} (laid out by hand, {state.files} files): missing {', '.join(state.missing)}; "
            f"copy those there, or `talkies pull {slug}` fetches what is missing"
        )
    if state.missing:
        line += f"; missing or incomplete: {', '.join(state.missing)}"
    return line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkies", description="OpenAI-compatible speech server")
    parser.add_argument("--version", action="version", version=f"talkies {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (settings from TALKIES_* variables)")
    serve.add_argument("--host", help="overrides TALKIES_HOST")
    serve.add_argument("--port", type=int, help="overrides TALKIES_PORT")
    serve.add_argument(
        "--ray",
        action="store_true",
        help="deploy on Ray Serve instead (the talkies[ray] extra; docs/scale-out.md)",
    )
    serve.add_argument(
        "--address", help="with --ray: the Ray cluster to join (overrides TALKIES_RAY_ADDRESS)"
    )
    sub.add_parser("models", help="list the enabled models and whether each can run here")
    pull = sub.add_parser(
        "pull",
        aliases=["download"],
        help="fetch model snapshots into $TALKIES_DATA_DIR/models/ (resumable, verified)",
    )
    pull.add_argument("slugs", nargs="*", help="models to fetch (default: every enabled model)")
    pull.add_argument(
        "--check", action="store_true", help="only verify what is on disk; exit 1 naming what is missing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        settings = load_settings(**overrides)
        configure_logging(settings.log_level)
        if args.command == "serve" and args.ray:
            return _serve_on_ray(settings, args.address)
        if args.command == "serve":
            if args.address:
                raise ConfigError("--address needs --ray (it names the Ray cluster to deploy to)")
            return _serve(settings)
        if args.command == "models":
            return _models(settings)
        return _pull(settings, args.slugs, check=args.check)
    except ConfigError as exc:
        print(f"talkies: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except TalkiesError as exc:
        print(f"talkies: {exc.message}", file=sys.stderr)
        return 1
