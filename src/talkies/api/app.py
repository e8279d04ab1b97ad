"""The application factory. No import-time singletons: everything hangs off `app.state`."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from talkies import __version__
from talkies.api import audio, files, pulls, system, translations, ui, voices
from talkies.api import realtime as realtime_api
from talkies.api.errors import install_error_handlers
from talkies.api.lifecycle import DrainGate, Lifecycle
from talkies.api.mcp import install_mcp
from talkies.api.middleware import (
    BearerAuthMiddleware,
    HostOriginGuard,
    PathNormalizeMiddleware,
    RequestContextMiddleware,
)
from talkies.api.proxy import ProcessModelRouter
from talkies.api.uploads import remove_stale_uploads
from talkies.device import resolve_device
from talkies.engines import make_engine_factory, model_installed
from talkies.errors import ConfigError
from talkies.netpolicy import HostPolicy, UrlAllowlist
from talkies.pool import Clock, EngineFactory, ModelPool
from talkies.registry import Registry, default_models_file, load_registry
from talkies.services.downloads import Downloader, using_file_path
from talkies.services.files import FileStore, retire_legacy_url_cache
from talkies.services.provider import RemoteModels
from talkies.services.proxy import ProxyService
from talkies.services.pulls import PullManager
from talkies.services.speech import SpeechService
from talkies.services.transcription import TranscriptionService
from talkies.services.voices import VoiceService
from talkies.settings import Settings

if TYPE_CHECKING:
    from talkies.api.wyoming import WyomingServer
    from talkies.metrics import Metrics

log = logging.getLogger(__name__)


def build_registry(settings: Settings, device: str) -> Registry:
    registry = load_registry(
        settings.models_file or default_models_file(device),
        settings.enabled_models,
        default_asr=settings.default_asr_model or None,
        default_tts=settings.default_tts_model or None,
        installed=functools.partial(model_installed, device=device, models_dir=settings.models_dir),
        batching=settings.batching,
    )
    unknown = [slug for slug in settings.preload if slug not in registry.models]
    if unknown:
        raise ConfigError(
            f"TALKIES_PRELOAD names models that are not enabled: {', '.join(unknown)}; "
            f"enabled: {', '.join(registry.models)}"
        )
    return registry


def host_policy(settings: Settings) -> HostPolicy:
    policy = HostPolicy.build(
        settings.allowed_hosts, bind=settings.host, has_token=bool(settings.auth_tokens)
    )
    if policy.any_host:
        log.info("Host check: any Host is answered (%s)", policy.reason)
    else:
        log.info("Host check: answering %s (%s)", ", ".join(policy.names), policy.reason)
    return policy


def _clean_at_start(settings: Settings, files: FileStore, url_cache: FileStore) -> None:
    """What a crash can leave behind: `.part` files, upload temp files; and URL bodies an older version
    cached inside the staging area (files/downloads/), where /v1/files could read them."""
    files.remove_partials()
    url_cache.remove_partials()
    stale = remove_stale_uploads(settings.upload_tmp_dir)
    if stale:
        log.info("removed %d stale upload temp file(s) from %s", stale, settings.upload_tmp_dir)
    retired = retire_legacy_url_cache(files)
    if retired:
        log.warning("removed %d URL-cache entries an older version left in %s/downloads", retired, files.root)


def _metrics(pool: ModelPool, lifecycle: Lifecycle) -> Metrics | None:
    """The app's metrics, installed as the pool's events; None (GET /metrics answers 503) in an environment
    set up before prometheus-client became a dependency."""
    try:
        from talkies.metrics import Metrics
    except ImportError as exc:
        log.warning("GET /metrics is off: %s (pip install prometheus-client)", exc)
        return None
    metrics = Metrics(pool)
    pool.events = metrics
    metrics.in_flight.set_function(lambda: lifecycle.in_flight)
    return metrics


def _busy(pool: ModelPool, slug: str) -> bool:
    """Loaded, loading, or with requests running or waiting: its snapshot must stay."""
    running, waiting = pool.occupancy().get(slug, (0, 0))
    return pool.is_loaded(slug) or running > 0 or waiting > 0


def _wyoming_server(settings: Settings, app: FastAPI) -> WyomingServer:
    import importlib.util

    if importlib.util.find_spec("wyoming") is None:
        raise ConfigError(
            "TALKIES_WYOMING_URI is set but the wyoming package is not installed "
            "(pip install 'talkies[wyoming]')"
        )
    from talkies.api.wyoming import WyomingServer

    return WyomingServer(
        settings.wyoming_uri,
        registry=app.state.registry,
        pool=app.state.pool,
        transcription=app.state.transcription,
        speech=app.state.speech,
        settings=settings,
    )


def create_app(
    settings: Settings,
    *,
    engine_factory: EngineFactory | None = None,
    clock: Clock | None = None,
    remote: RemoteModels | None = None,
) -> FastAPI:
    """Build the app. Raises ConfigError for a bad registry, before anything is served.

    `remote`: engines run elsewhere (Ray Serve's model servers, `talkies.ray`); the local pool then only
    answers registry questions and never loads a model."""
    device = resolve_device(settings.device)
    registry = build_registry(settings, device)
    pool_kwargs = {"clock": clock} if clock else {}
    factory = engine_factory or make_engine_factory(settings)  # worker processes per TALKIES_ENGINE_ISOLATION
    model_pulls = PullManager(registry, settings.models_dir)  # a first use pulls here, before the load
    factory = model_pulls.pulling_first(factory)
    pool = ModelPool(registry, settings, device=device, engine_factory=factory, **pool_kwargs)
    model_pulls.is_busy = functools.partial(_busy, pool)
    lifecycle = Lifecycle()
    metrics = _metrics(pool, lifecycle)
    if metrics is not None:
        from talkies.metrics_pulls import PullCollector

        metrics.registry.register(PullCollector(model_pulls))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app.state.files = FileStore(settings.files_dir, settings.max_upload_bytes)
        url_cache = FileStore(settings.url_cache_dir, settings.max_download_bytes)
        await anyio.to_thread.run_sync(_clean_at_start, settings, app.state.files, url_cache)
        app.state.downloads = Downloader(
            url_cache,
            max_bytes=settings.max_download_bytes,
            cache_bytes=settings.download_cache_bytes,
            block_private=settings.block_private_downloads,
            allowlist=UrlAllowlist.parse(settings.url_allowlist),
            total_timeout=settings.download_timeout,
        )
        if not settings.block_private_downloads:
            log.warning(
                "TALKIES_BLOCK_PRIVATE_DOWNLOADS=false: file_path URLs may reach private and loopback "
                "addresses (only link-local and cloud metadata stay refused)"
            )
        app.state.use_file_path = functools.partial(
            using_file_path, files=app.state.files, downloads=app.state.downloads
        )
        log.info(
            "talkies %s: %d models from %s on %s, data in %s",
            __version__,
            len(registry.models),
            registry.path,
            device,
            settings.data_dir,
        )
        if settings.preload:
            log.info("preloading %s", ", ".join(settings.preload))
            await (remote or pool).preload(settings.preload)
        pool.start_sweeper()
        wyoming = _wyoming_server(settings, app) if settings.wyoming_uri else None
        try:
            if wyoming is not None:
                await wyoming.start()
            app.state.wyoming = wyoming
            async with mcp_endpoint.running() if mcp_endpoint else contextlib.nullcontext():
                lifecycle.started = True
                try:
                    yield
                finally:
                    lifecycle.started = False
        finally:
            if wyoming is not None:
                await wyoming.stop()
            await model_pulls.close()  # before the pool: a load waiting for its pull is let go
            await pool.close()
            await proxy.aclose()

    app = FastAPI(title="talkies", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.pool = pool
    app.state.device = device
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    app.state.pulls = model_pulls
    app.state.remote = remote
    app.state.transcription = TranscriptionService(pool, registry, settings, remote)
    app.state.speech = SpeechService(pool, registry, settings, remote)
    app.state.voices = VoiceService(settings)
    app.state.proxy = proxy = ProxyService(pool, registry, settings)
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(audio.router)
    app.include_router(translations.router)
    app.include_router(files.router)
    app.include_router(voices.router)
    app.include_router(pulls.router)
    app.state.realtime_sessions = realtime_api.SessionCount()
    app.include_router(realtime_api.router)
    if settings.ui:
        app.include_router(ui.router)
    hosts = host_policy(settings)
    app.state.host_policy = hosts
    mcp_endpoint = install_mcp(app, hosts, settings.cors_origins)

    # Last added runs first: CORS, path normalization (/v1/v1/...), request context (so a 401 / 421 / 403
    # is logged and counted too), the drain gate (503 once SIGTERM arrived; counts requests in flight),
    # then the Host / Origin guard, then auth, then the router that sends requests for `process` models
    # to their servers (only when there are some).
    from talkies.api.admission_scope import AdmissionScope

    app.add_middleware(AdmissionScope, pool=pool)  # innermost: the places a request takes last its life
    if any(spec.executor == "process" for spec in registry.models.values()):
        app.add_middleware(ProcessModelRouter)
    app.add_middleware(
        BearerAuthMiddleware,
        tokens=settings.auth_tokens,
        public_catalog=settings.public_catalog,
        metrics_public=settings.metrics_public,
    )
    app.add_middleware(HostOriginGuard, policy=hosts, cors_origins=settings.cors_origins)
    app.add_middleware(DrainGate, lifecycle=lifecycle)
    app.add_middleware(RequestContextMiddleware, observe=metrics.observe_request if metrics else None)
    app.add_middleware(PathNormalizeMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app
