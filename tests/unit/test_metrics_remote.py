"""talkies.metrics_remote: the model-server replicas' pool metrics merged into the ingress's exposition."""

from __future__ import annotations

import pickle

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from talkies.metrics_remote import pool_families, render_merged


def _registry(loads: float, loaded: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("talkies_model_loads", "loads", ["model"], registry=registry).labels("m").inc(loads)
    Gauge("talkies_model_loaded", "resident", ["model"], registry=registry).labels("m").set(loaded)
    Counter("talkies_requests", "requests", ["status"], registry=registry).labels("200").inc()
    return registry


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_replica_families_are_plain_data_with_only_pool_metrics_labelled() -> None:
    families = pool_families(_registry(2, 1), {"deployment": "d", "replica": "r1"})
    assert {name for name, _, _, _ in families} == {"talkies_model_loads", "talkies_model_loaded"}
    assert pickle.loads(pickle.dumps(families)) == families  # crosses Ray as it is
    loaded = next(samples for name, _, _, samples in families if name == "talkies_model_loaded")
    assert loaded == [("talkies_model_loaded", {"model": "m", "deployment": "d", "replica": "r1"}, 1.0)]


def test_one_family_per_name_with_every_replicas_samples() -> None:
    ingress = _registry(0, 0)
    remote = pool_families(_registry(2, 1), {"deployment": "models", "replica": "r1"})
    remote += pool_families(_registry(1, 0), {"deployment": "models", "replica": "r2"})
    text = render_merged(ingress, {"deployment": "ingress", "replica": "i1"}, remote).decode()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    samples = _samples(text)
    loads = "talkies_model_loads_total"
    assert samples[(loads, (("deployment", "ingress"), ("model", "m"), ("replica", "i1")))] == 0
    assert samples[(loads, (("deployment", "models"), ("model", "m"), ("replica", "r1")))] == 2
    assert samples[(loads, (("deployment", "models"), ("model", "m"), ("replica", "r2")))] == 1
    assert (
        samples[("talkies_model_loaded", (("deployment", "models"), ("model", "m"), ("replica", "r1")))] == 1
    )
    # the ingress's own HTTP metrics keep their labels
    assert samples[("talkies_requests_total", (("status", "200"),))] == 1


def test_a_family_only_the_replicas_have_is_added() -> None:
    remote = [
        (
            "talkies_batch_timer_closed",
            "batches",
            "counter",
            [("talkies_batch_timer_closed_total", {"model": "w", "replica": "r"}, 3.0)],
        )
    ]
    text = render_merged(CollectorRegistry(), {}, remote).decode()
    assert _samples(text) == {("talkies_batch_timer_closed_total", (("model", "w"), ("replica", "r"))): 3.0}
