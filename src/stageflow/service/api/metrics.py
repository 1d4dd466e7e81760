"""Prometheus metrics of the API process (``prometheus_client``, text format at ``/metrics``).

Names follow Prometheus conventions with the ``stageflow_`` prefix. Counted here:
HTTP requests by method, route template and status, with a duration histogram.
Read from the store at each scrape, so every API process of a deployment says the
same: runs and task runs by pipeline and state; queued and running runs; the task
runs of unfinished runs by state; the oldest queued run's wait; the unfinished runs
whose lease expired; the leases taken over, by pipeline; histograms of run
durations, task (attempt) durations, task queue waits (ready to started: waiting for
resources) and claim latencies (submitted to started), where a mapped task's elements
count and not its own attempt spanning them; the live workers, their
capacity and what running attempts hold of it (``Store.workers``,
``Store.requests_in_use``).

The task histograms do not read the store's whole history at each scrape: attempts
that ended (durations) or started (queue waits) more than ``SETTLE_SECONDS`` ago are
settled, added once to running totals that the collector keeps (its first scrape reads
them all), and each scrape reads only the attempts after that horizon, through the
runs that ended after it or have not ended (an index on the runs' end time). The
horizon trails the clock by more than a commit can lag (a batch older than the run's
lease is never committed) or hosts' clocks may differ, so nothing lands behind it. A
run deleted later stays counted by a process that counted it (counters never go
down); a process started after the deletion does not count it.

Label cardinality is bounded. The ``pipeline`` label holds at most
``PIPELINE_LABELS`` names (the busiest); the rest are summed under ``other``. The
``task`` label is the spec's task id (``train``, not ``train[3]``: a mapped
element's index is dropped) and at most ``TASK_LABELS`` (pipeline, task) pairs
are kept, the busiest; the rest are summed under ``task="other"``. So a store with
thousands of pipelines or a fan-out of 10,000 cannot blow up a Prometheus server.
Each app has its own registry (several apps in one process, as tests make, do not
collide).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stageflow.errors import StageflowError
from stageflow.operations.stores import Store
from stageflow.runtime.usage import base_task_id, parse_request

if TYPE_CHECKING:
    from stageflow.runtime.store.base import Histogram as StoredHistogram

__all__ = ["CONTENT_TYPE", "PIPELINE_LABELS", "SETTLE_SECONDS", "TASK_LABELS", "ApiMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The most distinct ``pipeline`` label values (``STAGEFLOW_METRICS_PIPELINES``).
PIPELINE_LABELS = int(os.environ.get("STAGEFLOW_METRICS_PIPELINES", "200") or 200)
#: The most distinct (pipeline, task) label pairs (``STAGEFLOW_METRICS_TASKS``).
TASK_LABELS = int(os.environ.get("STAGEFLOW_METRICS_TASKS", "500") or 500)
#: Run and task durations' bucket bounds, seconds (a tenth of a second to a day).
_RUN_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
_TASK_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
#: Waits: a millisecond to an hour.
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 3600.0)
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Attempts this much older than the clock are settled (module docstring); at least four
#: lease lengths, so that no commit lags behind the horizon.
SETTLE_SECONDS = 300.0


def _kept(counts: dict[tuple[str, ...], int], cap: int) -> set[tuple[str, ...]]:
    """The ``cap`` keys with the most counts (ties: by name)."""
    return set(sorted(counts, key=lambda k: (-counts[k], k))[:cap])


def _histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    bounds: Sequence[float],
    series: Iterable[tuple[tuple[str, ...], int, float, list[int]]],
) -> HistogramMetricFamily:
    """One histogram family from the store's series, summing those that map to one
    label tuple (``series``: the label values to show, then the stored series' count,
    sum and counts within each bound)."""
    summed: dict[tuple[str, ...], tuple[int, float, list[int]]] = {}
    for key, observed, total, within in series:
        n0, t0, w0 = summed.get(key, (0, 0.0, [0] * len(bounds)))
        summed[key] = (n0 + observed, t0 + total, [a + b for a, b in zip(w0, within, strict=True)])
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for key, (count, total, within) in sorted(summed.items()):
        buckets = [(repr(b), n) for b, n in zip(bounds, within, strict=True)]
        family.add_metric(list(key), [*buckets, ("+Inf", count)], sum_value=total)
    return family


class _Settled:
    """One task histogram's settled part (module docstring): running totals of the
    attempts up to ``horizon``, kept across scrapes, plus a fresh read of the rest.

    State: the horizon (``None`` before the first scrape) and the totals by labels."""

    def __init__(self, read: Callable[..., list[StoredHistogram]], settle: float) -> None:
        self._read = read  # Store.attempt_durations or attempt_queue_waits
        self._settle = settle
        self.horizon: float | None = None
        self._totals: dict[tuple[str, ...], tuple[int, float, list[int]]] = {}

    def series(self, bounds: Sequence[float], now: float) -> list[StoredHistogram | _Series]:
        """The whole histogram as of ``now``: the settled totals (moved up to ``now``
        less the settling time) and the attempts after them, read afresh."""
        horizon = now - self._settle
        if self.horizon is None:  # the first scrape: the history once
            self._add(self._read(bounds, until=horizon))
            self.horizon = horizon
        elif horizon > self.horizon:
            self._add(self._read(bounds, after=self.horizon, until=horizon))
            self.horizon = horizon
        # A label tuple may come twice (settled and fresh): ``_histogram`` sums them.
        settled = [_Series(labels, *value) for labels, value in self._totals.items()]
        return [*settled, *self._read(bounds, after=self.horizon)]

    def _add(self, series: Sequence[StoredHistogram]) -> None:
        for h in series:
            self._totals[h.labels] = _plus(self._totals.get(h.labels), h)


def _plus(
    value: tuple[int, float, list[int]] | None, h: StoredHistogram
) -> tuple[int, float, list[int]]:
    if value is None:
        return h.observed, h.total, list(h.within)
    observed, total, within = value
    summed = [a + b for a, b in zip(within, h.within, strict=True)]
    return observed + h.observed, total + h.total, summed


class _Series(NamedTuple):
    """One labelled series of a settled histogram (the store's ``Histogram`` shape)."""

    labels: tuple[str, ...]
    observed: int
    total: float
    within: list[int]


class _StoreCollector(Collector):
    def __init__(
        self,
        store: Store,
        started_at: float,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.started_at = started_at
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.pipeline: Callable[[str], str] = str  # the label of a pipeline (``_runs``)
        settle = max(SETTLE_SECONDS, 4 * lease_seconds)
        self.durations = _Settled(store.attempt_durations, settle)
        self.waits = _Settled(store.attempt_queue_waits, settle)
        self._lock = threading.Lock()  # two scrapes at once: one moves the horizons

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        uptime = GaugeMetricFamily(
            "stageflow_api_uptime_seconds", "Seconds since this API process started."
        )
        uptime.add_metric([], time.time() - self.started_at)
        yield uptime
        # The store down: /health says so; the scrape gives what it has.
        for part in (self._runs, self._tasks, self._queue, self._workers):
            try:
                yield from part()
            except StageflowError:
                return

    def _runs(self) -> Iterator[Metric]:
        counts = self.store.run_counts()
        by_pipeline: dict[tuple[str, ...], int] = {}
        for pipeline, _, n in counts:
            by_pipeline[(pipeline,)] = by_pipeline.get((pipeline,), 0) + n
        kept = {p for (p,) in _kept(by_pipeline, PIPELINE_LABELS)}
        self.pipeline = lambda p: p if p in kept else "other"
        runs = GaugeMetricFamily(
            "stageflow_runs",
            "Runs in the store by pipeline and state.",
            labels=["pipeline", "state"],
        )
        summed: dict[tuple[str, str], int] = {}
        states: dict[str, int] = {}
        for pipeline, state, n in counts:
            key = (self.pipeline(pipeline), state)
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
        yield _histogram(
            "stageflow_run_duration_seconds",
            "How long ended runs took, from start to end, by pipeline.",
            ["pipeline"],
            _RUN_BUCKETS,
            (
                ((self.pipeline(p),), n, total, within)
                for p, n, total, within in self.store.run_durations(_RUN_BUCKETS)
            ),
        )
        takeovers = CounterMetricFamily(
            "stageflow_lease_takeovers",
            "Claims of a run whose lease another owner held (it went silent, or handed "
            "the run back), by pipeline.",
            labels=["pipeline"],
        )
        taken: dict[str, int] = {}
        for pipeline, n in self.store.lease_takeovers():
            taken[self.pipeline(pipeline)] = taken.get(self.pipeline(pipeline), 0) + n
        for pipeline, n in sorted(taken.items()):
            takeovers.add_metric([pipeline], n)
        yield takeovers
        yield _histogram(
            "stageflow_run_claim_latency_seconds",
            "How long started runs waited from submission until a worker claimed them "
            "(or `stageflow run` began them), by pipeline.",
            ["pipeline"],
            _WAIT_BUCKETS,
            self._by_pipeline(self.store.claim_latencies(_WAIT_BUCKETS)),
        )

    def _by_pipeline(
        self, series: Sequence[StoredHistogram | _Series]
    ) -> Iterator[tuple[tuple[str, ...], int, float, list[int]]]:
        for h in series:
            yield (self.pipeline(h.labels[0]),), h.observed, h.total, h.within

    def _tasks(self) -> Iterator[Metric]:
        task_runs = GaugeMetricFamily(
            "stageflow_task_runs",
            "Task runs in the store by pipeline and state.",
            labels=["pipeline", "state"],
        )
        summed: dict[tuple[str, str], int] = {}
        for pipeline, state, n in self.store.task_run_counts():
            key = (self.pipeline(pipeline), state)
            summed[key] = summed.get(key, 0) + n
        for (pipeline, state), n in sorted(summed.items()):
            task_runs.add_metric([pipeline, state], n)
        yield task_runs
        durations = self.durations.series(_TASK_BUCKETS, self.clock())
        by_task: dict[tuple[str, ...], int] = {}
        for h in durations:
            key = (self.pipeline(h.labels[0]), base_task_id(h.labels[1]))
            by_task[key] = by_task.get(key, 0) + h.observed
        kept = _kept(by_task, TASK_LABELS)

        def task_key(h: StoredHistogram | _Series) -> tuple[str, ...]:
            key = (self.pipeline(h.labels[0]), base_task_id(h.labels[1]))
            return key if key in kept else (key[0], "other")

        yield _histogram(
            "stageflow_task_duration_seconds",
            "How long task attempts took, from start to end, by pipeline and task.",
            ["pipeline", "task"],
            _TASK_BUCKETS,
            ((task_key(h), *h[1:]) for h in durations),
        )
        yield _histogram(
            "stageflow_task_queue_wait_seconds",
            "How long task attempts waited from ready to started (for resources, "
            "pools and the run's parallelism), by pipeline.",
            ["pipeline"],
            _WAIT_BUCKETS,
            self._by_pipeline(self.waits.series(_WAIT_BUCKETS, self.clock())),
        )

    def _queue(self) -> Iterator[Metric]:
        now = time.time()
        activity = self.store.activity(now)
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

    def _workers(self) -> Iterator[Metric]:
        live = self.store.workers(time.time() - self.lease_seconds)
        workers = GaugeMetricFamily(
            "stageflow_workers", "Live workers (a heartbeat within a lease's length)."
        )
        workers.add_metric([], len(live))
        yield workers
        capacity: dict[str, float] = {}
        for worker in live:
            for resource, amount in worker.capacity.items():
                capacity[resource] = capacity.get(resource, 0.0) + amount
        used: dict[str, float] = {}
        for request in self.store.requests_in_use():
            for resource, amount in parse_request(request).items():
                used[resource] = used.get(resource, 0.0) + amount
        for name, values, what in (
            ("stageflow_capacity", capacity, "The live workers' capacity, by resource."),
            (
                "stageflow_capacity_in_use",
                used,
                "What running attempts hold, by resource (cpu, memory_gb, gpu, custom).",
            ),
        ):
            family = GaugeMetricFamily(name, what, labels=["resource"])
            for resource in sorted(set(capacity) | set(used)):
                family.add_metric([resource], values.get(resource, 0.0))
            yield family


class ApiMetrics:
    """The registry of one app and what the middleware records."""

    def __init__(
        self, store: Store, *, lease_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
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
        self.registry.register(_StoreCollector(store, clock(), lease_seconds, clock))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def text(self) -> bytes:
        return bytes(generate_latest(self.registry))
