"""Prometheus metrics of the API process (``prometheus_client``, text format at ``/metrics``).

Names follow Prometheus conventions with the ``stageflow_`` prefix. Counted here:
HTTP requests by method, route template and status, with a duration histogram.
Read from the store at each scrape: runs by pipeline and state, queued and running
runs, the task runs of unfinished runs by state, the oldest queued run's wait, and the
unfinished runs whose lease expired (each query on an index of unfinished runs). The
``pipeline`` label holds at most ``PIPELINE_LABELS`` names (the busiest); the rest are
summed under ``other``, so a store with thousands of pipelines cannot blow up a
Prometheus server. Each app has its own registry (several apps in one
process, as tests make, do not collide).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stageflow.errors import StageflowError
from stageflow.operations.stores import Store

__all__ = ["CONTENT_TYPE", "PIPELINE_LABELS", "ApiMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The most distinct ``pipeline`` label values (``STAGEFLOW_METRICS_PIPELINES``).
PIPELINE_LABELS = int(os.environ.get("STAGEFLOW_METRICS_PIPELINES", "200") or 200)
#: Run durations' bucket bounds, seconds (a minute to a day at the top).
_RUN_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StoreCollector(Collector):
    def __init__(self, store: Store, started_at: float) -> None:
        self.store = store
        self.started_at = started_at

    def collect(self) -> Iterator[Metric]:
        uptime = GaugeMetricFamily(
            "stageflow_api_uptime_seconds", "Seconds since this API process started."
        )
        uptime.add_metric([], time.time() - self.started_at)
        yield uptime
        try:
            counts = self.store.run_counts()
        except StageflowError:  # the store is down: /health says so; the scrape goes on
            return
        by_pipeline: dict[str, int] = {}
        for pipeline, _, n in counts:
            by_pipeline[pipeline] = by_pipeline.get(pipeline, 0) + n
        kept = set(sorted(by_pipeline, key=lambda p: (-by_pipeline[p], p))[:PIPELINE_LABELS])
        runs = GaugeMetricFamily(
            "stageflow_runs",
            "Runs in the store by pipeline and state.",
            labels=["pipeline", "state"],
        )
        summed: dict[tuple[str, str], int] = {}
        states: dict[str, int] = {}
        for pipeline, state, n in counts:
            key = (pipeline if pipeline in kept else "other", state)
            summed[key] = summed.get(key, 0) + n
            states[state] = states.get(state, 0) + n
        for (pipeline, state), n in sorted(summed.items()):
            runs.add_metric([pipeline, state], n)
        yield runs
        queued = GaugeMetricFamily("stageflow_runs_queued", "Runs waiting for a worker.")
        queued.add_metric([], states.get("queued", 0))
        yield queued
        active = GaugeMetricFamily("stageflow_runs_active", "Runs being executed.")
        active.add_metric([], states.get("running", 0))
        yield active
        try:
            durations = self.store.run_durations(_RUN_BUCKETS)
        except StageflowError:
            return
        histogram = HistogramMetricFamily(
            "stageflow_run_duration_seconds",
            "How long ended runs took, from start to end, by pipeline.",
            labels=["pipeline"],
        )
        ran: dict[str, tuple[int, float, list[int]]] = {}
        for pipeline, count, total, within in durations:
            label = pipeline if pipeline in kept else "other"
            n0, t0, w0 = ran.get(label, (0, 0.0, [0] * len(within)))
            ran[label] = (n0 + count, t0 + total, [a + b for a, b in zip(w0, within, strict=True)])
        for pipeline, (count, total, within) in sorted(ran.items()):
            buckets = [(repr(b), n) for b, n in zip(_RUN_BUCKETS, within, strict=True)]
            histogram.add_metric([pipeline], [*buckets, ("+Inf", count)], sum_value=total)
        yield histogram
        now = time.time()
        try:
            activity = self.store.activity(now)
        except StageflowError:
            return
        tasks = GaugeMetricFamily(
            "stageflow_tasks_active",
            "Task runs of unfinished runs, by state (running: attempts in progress).",
            labels=["state"],
        )
        for state, n in sorted(activity.tasks.items()):
            tasks.add_metric([state], n)
        yield tasks
        wait = GaugeMetricFamily(
            "stageflow_queue_oldest_wait_seconds",
            "How long the oldest queued run has waited for a worker (0: none waits).",
        )
        oldest = activity.oldest_queued_at
        wait.add_metric([], max(0.0, now - oldest) if oldest is not None else 0.0)
        yield wait
        expired = GaugeMetricFamily(
            "stageflow_runs_lease_expired",
            "Unfinished runs whose owner went silent (lease expired): taken over next.",
        )
        expired.add_metric([], activity.expired_leases)
        yield expired


class ApiMetrics:
    """The registry of one app and what the middleware records."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stageflow_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "stageflow_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store, time.time()))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def text(self) -> bytes:
        return bytes(generate_latest(self.registry))
