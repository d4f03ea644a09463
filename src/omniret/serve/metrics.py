"""Prometheus text exposition (format 0.0.4) of the server's counters, without a client library.

Request counts by route and status, a request-latency histogram per route, encoder forward passes with
items per pass, and the queue depth.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(**kv: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items())
    return "{" + inner + "}" if inner else ""


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1  # per-bucket here, made cumulative when rendered
                break
        self.sum += v
        self.count += 1

    def render(self, name: str, **labels: str) -> list[str]:
        out, acc = [], 0
        for b, c in zip(self.buckets, self.counts, strict=True):
            acc += c
            out.append(f"{name}_bucket{_labels(**labels, le=f'{b:g}')} {acc}")
        out.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {self.count}")
        out.append(f"{name}_sum{_labels(**labels)} {self.sum:.6f}")
        out.append(f"{name}_count{_labels(**labels)} {self.count}")
        return out


class Metrics:
    """Thread-safe counters of one server; :meth:`render` gives the ``/metrics`` body."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._batch = _Histogram(BATCH_BUCKETS)
        self._batched_requests = 0
        self.queue_depth = queue_depth

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, items: int, requests: int) -> None:
        """One encoder forward group of ``items`` items from ``requests`` requests."""
        with self._lock:
            self._batch.observe(items)
            self._batched_requests += requests

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP omniret_requests_total HTTP requests by method, route and status.",
                     "# TYPE omniret_requests_total counter"]
            for (m, r, s), n in sorted(self._requests.items()):
                lines.append(f"omniret_requests_total{_labels(method=m, route=r, status=str(s))} {n}")
            lines += ["# HELP omniret_request_seconds HTTP request latency.",
                      "# TYPE omniret_request_seconds histogram"]
            for route, h in sorted(self._latency.items()):
                lines += h.render("omniret_request_seconds", route=route)
            lines += ["# HELP omniret_batch_items Items per encoder forward group (micro-batching).",
                      "# TYPE omniret_batch_items histogram", *self._batch.render("omniret_batch_items"),
                      "# HELP omniret_batched_requests_total Requests served by encoder forward groups.",
                      "# TYPE omniret_batched_requests_total counter",
                      f"omniret_batched_requests_total {self._batched_requests}"]
        lines += ["# HELP omniret_queue_depth Requests waiting for the encoder.",
                  "# TYPE omniret_queue_depth gauge", f"omniret_queue_depth {self.queue_depth()}"]
        return "\n".join(lines) + "\n"
