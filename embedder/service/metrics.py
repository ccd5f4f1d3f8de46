"""The service's Prometheus metrics, kept with ``prometheus_client`` in a registry of their own.

Each :class:`Metrics` owns a :class:`prometheus_client.CollectorRegistry` (never the
process-wide default one), so several apps in one process, as in the tests, keep
separate counts. Counters and histograms are updated as requests and batches finish;
queue depths and admission gauges are read from the live service at scrape time by a
collector (:meth:`Metrics.watch`).

Names (the README lists them): ``qvl_requests_total{route,status}``,
``qvl_items_total{route}``, ``qvl_request_seconds{route}``, ``qvl_batch_size{model}``,
``qvl_batch_seconds{model}``, ``qvl_batch_padded_tokens_total{model}``,
``qvl_dropped_items_total{stage}``, ``qvl_client_disconnects_total``,
``qvl_queue_depth{model}``, ``qvl_queue_capacity{model}`` and the admission gauges
``qvl_inflight_requests``, ``qvl_inflight_body_bytes``, ``qvl_preprocess_items``.
"""
from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from .batcher import BatchStats

__all__ = ["Metrics", "CONTENT_TYPE", "LATENCY_BUCKETS", "BATCH_BUCKETS"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST

Queues = Callable[[], "dict[str, tuple[int, int]]"]
Gauges = Callable[[], "dict[str, tuple[str, float]]"]


class _LiveGauges:
    """A collector that reads queue depths and admission counts from the service when scraped."""

    def __init__(self, queues: Queues, gauges: Gauges) -> None:
        self.queues = queues
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for name, (help_text, value) in sorted(self.gauges().items()):
            yield GaugeMetricFamily(name, help_text, value=float(value))
        queues = sorted(self.queues().items())
        depth = GaugeMetricFamily("qvl_queue_depth", "Items waiting for the model.", labels=["model"])
        capacity = GaugeMetricFamily("qvl_queue_capacity", "Queue limit (items).", labels=["model"])
        for model, (d, c) in queues:
            depth.add_metric([model], float(d))
            capacity.add_metric([model], float(c))
        yield depth
        yield capacity


class Metrics:
    """Counters and histograms of one service, in their own registry.

    Attributes:
        registry: the :class:`~prometheus_client.CollectorRegistry` that ``/metrics`` exposes.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("qvl_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=r)
        self.items = Counter("qvl_items", "Items (inputs or documents) received, by route.", ["route"], registry=r)
        self.latency = Histogram("qvl_request_seconds", "Request latency, by route.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("qvl_batch_size", "Items per forward pass.", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("qvl_batch_seconds", "Time per forward pass.", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_tokens = Counter("qvl_batch_padded_tokens", "Padded tokens run through the model.", ["model"],
                                    registry=r)
        self.dropped = Counter("qvl_dropped_items",
                               "Items of cancelled requests (client gone, timeout) never run, by stage.", ["stage"],
                               registry=r)
        self.disconnects = Counter("qvl_client_disconnects", "Requests whose client hung up before the answer.",
                                   registry=r)
        self._live: _LiveGauges | None = None

    def watch(self, queues: Queues, gauges: Gauges) -> None:
        """Report ``queues()`` (model -> (depth, capacity)) and ``gauges()`` (name -> (help, value)) when scraped."""
        if self._live is not None:
            self.registry.unregister(self._live)
        self._live = _LiveGauges(queues, gauges)
        self.registry.register(self._live)

    def observe_request(self, route: str, status: int, seconds: float, items: int) -> None:
        self.requests.labels(route, str(status)).inc()
        if items:
            self.items.labels(route).inc(items)
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.labels(stats.name).observe(stats.items)
        self.batch_seconds.labels(stats.name).observe(stats.seconds)
        self.batch_tokens.labels(stats.name).inc(stats.padded_tokens)

    def observe_dropped(self, stage: str, items: int) -> None:
        """``items`` of a cancelled request were dropped before ``stage`` ran them."""
        if items:
            self.dropped.labels(stage).inc(items)

    def observe_disconnect(self) -> None:
        self.disconnects.inc()

    def render(self) -> bytes:
        """The exposition text (``CONTENT_TYPE``) of everything in the registry."""
        return generate_latest(self.registry)
