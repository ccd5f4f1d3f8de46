"""Prometheus text-format counters and histograms of the service, kept by hand (no extra dependency)."""
from __future__ import annotations

import threading
from typing import Sequence

from .batcher import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, cum = [], 0
        for b, c in zip(self.buckets, self.counts):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {cum}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.total:.6g}")
        out.append(f"{name}_count{lab} {self.n}")
        return out


class Metrics:
    """Prometheus text-format counters and histograms, kept by hand (no extra dependency)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.items: dict[str, int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.batch_size: dict[str, _Histogram] = {}
        self.batch_seconds: dict[str, _Histogram] = {}
        self.batch_tokens: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.disconnects = 0

    def observe_request(self, route: str, status: int, seconds: float, items: int) -> None:
        with self._lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
            if items:
                self.items[route] = self.items.get(route, 0) + items
            self.latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, stats: BatchStats) -> None:
        with self._lock:
            self.batch_size.setdefault(stats.name, _Histogram(BATCH_BUCKETS)).observe(stats.items)
            self.batch_seconds.setdefault(stats.name, _Histogram(LATENCY_BUCKETS)).observe(stats.seconds)
            self.batch_tokens[stats.name] = self.batch_tokens.get(stats.name, 0) + stats.padded_tokens

    def observe_dropped(self, stage: str, items: int) -> None:
        """``items`` of a cancelled request were dropped before ``stage`` ran them."""
        if items:
            with self._lock:
                self.dropped[stage] = self.dropped.get(stage, 0) + items

    def observe_disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1

    def render(self, queues: dict[str, tuple[int, int]], gauges: dict[str, tuple[str, float]] | None = None) -> str:
        """The exposition text; ``queues`` maps model name -> (depth, capacity), ``gauges`` name -> (help, value)."""
        with self._lock:
            out = ["# HELP qvl_requests_total HTTP requests by route and status.",
                   "# TYPE qvl_requests_total counter"]
            out += [f'qvl_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
            out += ["# HELP qvl_items_total Items (inputs or documents) received, by route.",
                    "# TYPE qvl_items_total counter"]
            out += [f'qvl_items_total{{route="{r}"}} {n}' for r, n in sorted(self.items.items())]
            out += ["# HELP qvl_request_seconds Request latency, by route.", "# TYPE qvl_request_seconds histogram"]
            for r, h in sorted(self.latency.items()):
                out += h.lines("qvl_request_seconds", f'route="{r}"')
            out += ["# HELP qvl_batch_size Items per forward pass.", "# TYPE qvl_batch_size histogram"]
            for m, h in sorted(self.batch_size.items()):
                out += h.lines("qvl_batch_size", f'model="{m}"')
            out += ["# HELP qvl_batch_seconds Time per forward pass.", "# TYPE qvl_batch_seconds histogram"]
            for m, h in sorted(self.batch_seconds.items()):
                out += h.lines("qvl_batch_seconds", f'model="{m}"')
            out += ["# HELP qvl_batch_padded_tokens_total Padded tokens run through the model.",
                    "# TYPE qvl_batch_padded_tokens_total counter"]
            out += [f'qvl_batch_padded_tokens_total{{model="{m}"}} {n}' for m, n in sorted(self.batch_tokens.items())]
            out += ["# HELP qvl_dropped_items_total Items of cancelled requests (client gone, timeout) never run, "
                    "by stage.", "# TYPE qvl_dropped_items_total counter"]
            out += [f'qvl_dropped_items_total{{stage="{s}"}} {n}' for s, n in sorted(self.dropped.items())]
            out += ["# HELP qvl_client_disconnects_total Requests whose client hung up before the answer.",
                    "# TYPE qvl_client_disconnects_total counter", f"qvl_client_disconnects_total {self.disconnects}"]
        for name, (help_text, value) in sorted((gauges or {}).items()):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        out += ["# HELP qvl_queue_depth Items waiting for the model.", "# TYPE qvl_queue_depth gauge"]
        out += [f'qvl_queue_depth{{model="{m}"}} {d}' for m, (d, _) in sorted(queues.items())]
        out += ["# HELP qvl_queue_capacity Queue limit (items).", "# TYPE qvl_queue_capacity gauge"]
        out += [f'qvl_queue_capacity{{model="{m}"}} {c}' for m, (_, c) in sorted(queues.items())]
        return "\n".join(out) + "\n"
