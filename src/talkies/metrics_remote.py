"""`GET /metrics` when the models run in other processes (Ray Serve's model-server replicas, `talkies.ray`).

Each model-server replica keeps the single-process server's pool metrics (`talkies_model_*`,
`talkies_batch_*`: loads, unloads, evictions, crashes, timeouts, in flight, queue depth, resident,
batching) in its own registry, and answers them as `Family` rows, every sample labelled with its
`deployment` and `replica` (Serve's replica id). The ingress merges them into its own exposition: one
family per metric name, the same names as on the single-process server, the ingress's own pool samples
labelled with the ingress's deployment and replica (it runs `process` models), so `sum by (model)` gives
the whole application and `by (replica)` one replica. Pure prometheus_client: nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

POOL_PREFIXES = ("talkies_model_", "talkies_batch_")
Sample = tuple[str, dict[str, str], float]
Family = tuple[str, str, str, list[Sample]]  # name, help, type, samples: picklable plain data


def _is_pool(name: str) -> bool:
    return name.startswith(POOL_PREFIXES)


def pool_families(registry: CollectorRegistry, labels: Mapping[str, str]) -> list[Family]:
    """The pool metric families of `registry` (a model-server replica's), each sample with `labels` added."""
    return [
        (
            metric.name,
            metric.documentation,
            metric.type,
            [(s.name, {**s.labels, **labels}, float(s.value)) for s in metric.samples],
        )
        for metric in registry.collect()
        if _is_pool(metric.name)
    ]


class _Merged(Collector):
    def __init__(
        self, registry: CollectorRegistry, labels: Mapping[str, str], remote: Iterable[Family]
    ) -> None:
        self.registry = registry
        self.labels = dict(labels)
        self.remote = list(remote)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for metric in self.registry.collect():
            if _is_pool(metric.name):
                local = Metric(metric.name, metric.documentation, metric.type)
                for s in metric.samples:
                    local.add_sample(s.name, {**s.labels, **self.labels}, s.value, s.timestamp, s.exemplar)
                metric = local
            merged[metric.name] = metric
        for name, documentation, kind, samples in self.remote:
            family = merged.get(name)
            if family is None:
                family = merged[name] = Metric(name, documentation, kind)
            for sample_name, sample_labels, value in samples:
                family.add_sample(sample_name, sample_labels, value)
        yield from merged.values()


def render_merged(registry: CollectorRegistry, labels: Mapping[str, str], remote: Iterable[Family]) -> bytes:
    """Prometheus text of `registry` (the ingress's) with the replicas' `remote` families merged in; the
    ingress's own pool samples get `labels`."""
    out = CollectorRegistry(auto_describe=False)
    out.register(_Merged(registry, labels, remote))
    return generate_latest(out)
