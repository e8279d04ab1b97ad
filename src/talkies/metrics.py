"""Prometheus metrics (`GET /metrics`): one `CollectorRegistry` per app, so apps built side by side (tests)
never share or collide.

Counted as they happen: HTTP requests (RequestContextMiddleware calls `observe_request` once per request
with its final status, 499 for a client that hung up) and pool events (`PoolEvents`: loads, load failures,
unloads, evictions, crashes, timeouts). Read at scrape time from the pool: requests running and waiting
per model, which models are resident, and a resident model's worker memory.

Labels stay bounded: `endpoint` is the route's path template (`/v1/models/{model_id:path}`, "other" for a
path no route serves), `model` a slug of the registry ("" when the request named none or an unknown one).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import Scope

from talkies.errors import LoadTimeoutError
from talkies.pool import ModelPool, PoolEvents

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _PoolCollector(Collector):
    """Gauges read from the pool when scraped (no bookkeeping to drift)."""

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh each scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "talkies_model_in_flight", "Requests running on the model now", labels=["model"]
        )
        waiting = GaugeMetricFamily(
            "talkies_model_queue_depth",
            "Requests waiting for the model (a turn or its load)",
            labels=["model"],
        )
        loaded = GaugeMetricFamily("talkies_model_loaded", "1 while the model is resident", labels=["model"])
        for slug, (run, wait) in self.pool.occupancy().items():
            running.add_metric([slug], run)
            waiting.add_metric([slug], wait)
            loaded.add_metric([slug], 1 if self.pool.is_loaded(slug) else 0)
        memory = GaugeMetricFamily(
            "talkies_model_resident_bytes",
            "Resident memory of a loaded model's worker process (models in the server process: not known)",
            labels=["model"],
        )
        for row in self.pool.ps():
            if row.get("loaded") and row.get("rss_bytes") is not None:
                memory.add_metric([row["model"]], row["rss_bytes"])
        yield from (running, waiting, loaded, memory)
        yield from self._batches()

    def _batches(self) -> Iterator[Metric]:
        """Cross-request batching per loaded model (engines/batching.py; docs/batching.md)."""
        sizes = HistogramMetricFamily(
            "talkies_batch_size", "Work units per engine call of the cross-request batcher", labels=["model"]
        )
        wait = CounterMetricFamily(
            "talkies_batch_wait_seconds",
            "Seconds the oldest unit of each batch waited for it to close, summed",
            labels=["model"],
        )
        timer = CounterMetricFamily(
            "talkies_batch_timer_closed",
            "Batches closed by max_batch_wait_ms, not by max_batch_size",
            labels=["model"],
        )
        for slug in self.pool.occupancy():
            engine = self.pool.peek_engine(slug) if self.pool.is_loaded(slug) else None
            snapshot_of = getattr(engine, "batch_snapshot", None)
            try:
                snapshot = snapshot_of() if callable(snapshot_of) else None
            except Exception:  # a worker that just died or is busy answering: skip it this scrape
                snapshot = None
            if snapshot is None:
                continue
            counts, waited, by_timer = snapshot
            buckets = [
                (str(float(le)), float(sum(n for size, n in counts.items() if size <= le)))
                for le in BATCH_SIZE_BUCKETS
            ]
            buckets.append(("+Inf", float(sum(counts.values()))))
            sizes.add_metric([slug], buckets, float(sum(size * n for size, n in counts.items())))
            wait.add_metric([slug], waited)
            timer.add_metric([slug], by_timer)
        yield from (sizes, wait, timer)


class Metrics(PoolEvents):
    """The app's metrics. Installed as the pool's `events`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool
        self.registry = CollectorRegistry(auto_describe=True)
        self._route_paths: frozenset[str] | None = None
        r = self.registry
        self.requests = Counter(
            "talkies_requests",
            "HTTP requests answered, by endpoint, model and status (499: the client hung up)",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "talkies_request_duration_seconds",
            "Time from a request's arrival to its last byte (or the hang-up)",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("talkies_requests_in_flight", "HTTP requests being served now", registry=r)
        self.loads = Counter(
            "talkies_model_loads",
            "Model loads by result (ok, error, timeout)",
            ["model", "result"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "talkies_model_load_duration_seconds",
            "Duration of successful model loads",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.unloads = Counter("talkies_model_unloads", "Models unloaded (any reason)", ["model"], registry=r)
        self.evictions = Counter(
            "talkies_model_evictions", "Models unloaded to make room for another", ["model"], registry=r
        )
        self.crashes = Counter(
            "talkies_model_crashes",
            "Engines that died under their requests (a worker crash, an external server that exited)",
            ["model"],
            registry=r,
        )
        self.timeouts = Counter(
            "talkies_model_timeouts",
            "Timeouts: engine (no progress for TALKIES_ENGINE_TIMEOUT), load, queue",
            ["model", "kind"],
            registry=r,
        )
        r.register(_PoolCollector(pool))
        for slug in pool.registry.models:  # every series from the start, so rate() sees the first event
            self.loads.labels(slug, "ok")
            self.unloads.labels(slug)
            self.evictions.labels(slug)
            self.crashes.labels(slug)
            for kind in ("engine", "load", "queue"):
                self.timeouts.labels(slug, kind)

    # --- HTTP --------------------------------------------------------------------------------------

    def endpoint(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        if self._route_paths is None:
            app = scope.get("app")
            routes = getattr(app, "routes", ())
            self._route_paths = frozenset(p for r in routes if isinstance(p := getattr(r, "path", None), str))
        # Requests answered before routing (a process-executor model's proxy, auth, the drain) keep a
        # path only when a route has exactly that path.
        return scope["path"] if scope["path"] in self._route_paths else "other"

    def model(self, scope: Scope) -> str:
        named = scope.get("state", {}).get("model")
        if not isinstance(named, str) or not named:
            return ""
        return self.pool.registry.resolve(named) or ""

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        endpoint, model = self.endpoint(scope), self.model(scope)
        self.requests.labels(endpoint, model, str(status)).inc()
        self.latency.labels(endpoint, model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- PoolEvents --------------------------------------------------------------------------------

    def loaded(self, slug: str, seconds: float) -> None:
        self.loads.labels(slug, "ok").inc()
        self.load_seconds.labels(slug).observe(seconds)

    def load_failed(self, slug: str, error: BaseException) -> None:
        timed_out = isinstance(error, LoadTimeoutError)
        self.loads.labels(slug, "timeout" if timed_out else "error").inc()
        if timed_out:
            self.timeouts.labels(slug, "load").inc()

    def unloaded(self, slug: str) -> None:
        self.unloads.labels(slug).inc()

    def evicted(self, slug: str) -> None:
        self.evictions.labels(slug).inc()

    def engine_failed(self, slug: str, cause: str) -> None:
        if cause == "timeout":
            self.timeouts.labels(slug, "engine").inc()
        else:
            self.crashes.labels(slug).inc()

    def queue_timed_out(self, slug: str) -> None:
        self.timeouts.labels(slug, "queue").inc()
