"""`/metrics` for model pulls (`POST /api/pull` and first uses), read from the `PullManager` when scraped:
the manager is the one owner of the counts, so nothing here can drift from what it did."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from talkies.services.pulls import PullManager

TRIGGERS = ("api", "first_use")
RESULTS = ("ok", "error")


class PullCollector(Collector):
    def __init__(self, pulls: PullManager) -> None:
        self.pulls = pulls

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh each scrape

    def collect(self) -> Iterator[Metric]:
        slugs = list(self.pulls.registry.models)
        finished = CounterMetricFamily(
            "talkies_model_pulls",
            "Model pulls that ended, by trigger (api: POST /api/pull; first_use: a request for a model "
            "not on disk) and result",
            labels=["model", "trigger", "result"],
        )
        pulled = CounterMetricFamily(
            "talkies_model_pull_bytes", "Bytes of model snapshots downloaded", labels=["model"]
        )
        running = GaugeMetricFamily(
            "talkies_model_pull_in_progress", "1 while the model is pulled", labels=["model"]
        )
        completed = GaugeMetricFamily(
            "talkies_model_pull_completed_bytes",
            "Bytes of the pull in flight on disk so far",
            labels=["model"],
        )
        total = GaugeMetricFamily(
            "talkies_model_pull_total_bytes", "Bytes the pull in flight fetches in all", labels=["model"]
        )
        in_flight = self.pulls.in_flight()
        for slug in slugs:  # every series from the start, so rate() sees the first event
            for trigger in TRIGGERS:
                for result in RESULTS:
                    finished.add_metric([slug, trigger, result], self.pulls.finished[(slug, trigger, result)])
            pulled.add_metric([slug], self.pulls.bytes_pulled[slug])
            pull = in_flight.get(slug)
            running.add_metric([slug], 1 if pull else 0)
            if pull is not None:
                completed.add_metric([slug], pull.completed)
                if pull.download_bytes is not None:
                    total.add_metric([slug], pull.download_bytes)
        yield from (finished, pulled, running, completed, total)
