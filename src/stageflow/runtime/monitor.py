"""The monitor: a background duty that samples host and store gauges into the store.

Seed 003's ``PipelineMonitor`` as a duty (``runtime.duties``): every ``stageflow
worker`` and ``stageflow scheduler`` runs ``MonitorDuty.run_pass(now)`` every pass of
its schedule loop; the duty samples once per slot of ``sampling_interval_seconds``
(``STAGEFLOW_SAMPLING_INTERVAL_SECONDS``) and returns at once otherwise. Policy:

* **What**: of the host (label ``host``: its name): ``HOST_METRICS``, i.e. CPU
  percent, memory percent and bytes used, the disk usage (percent and bytes) of the
  file system holding the state folder, the 1-minute load average (psutil). Of the
  store (host ``''``): ``STORE_METRICS``, i.e. queued runs, running runs (paused
  ones count as running: their attempts go on) and live workers (a heartbeat within
  a lease), the queries ``/metrics`` uses. Of each task process tree running in this
  process (``--executor process``): ``TASK_METRICS``, labelled host, pipeline,
  run_id, task_id, attempt. They are not sampled a second time: the process
  executor's ``TreeSampler`` already samples each attempt's tree every 50 ms; the
  monitor reads its last RSS and the CPU seconds of the processes it holds
  (``operators.process_tree.live_trees``). A thread-executor task shares its worker's
  process: the host's figures are its figures. Ended attempts keep their CPU seconds
  and peak memory in the store (``stageflow runs usage``).
* **Once per slot, however many processes**: a sample's time is the start of its
  slot (``slot_of``: ``now`` rounded down to a multiple of the interval) and the store
  keeps one sample per (name, slot, host, labels) (``Store.add_samples``: the first
  writer wins). So two workers on one host write one host series, and any number of
  processes on one store write the store's gauges once per slot. The intervals of
  the processes should agree; with different intervals each slot boundary still
  writes once.
* **CPU percent** is measured between two passes (psutil's ``host.cpu_percent`` with no
  wait): the first pass of a process only primes it and records no CPU sample.
* **Retention**: samples older than ``metrics_retention_hours``
  (``STAGEFLOW_METRICS_RETENTION_HOURS``) are deleted on the first sampling pass and
  then at most every ``PRUNE_SECONDS`` (one indexed ``DELETE``), not every pass.

State: the last slot sampled, when it last pruned, psutil's CPU baseline.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path

from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import MetricSample, Store

__all__ = [
    "HOST_METRICS",
    "METRIC_NAMES",
    "PRUNE_SECONDS",
    "STORE_METRICS",
    "TASK_METRICS",
    "MonitorDuty",
    "host_gauges",
    "retention_cutoff",
    "slot_of",
]

logger = logging.getLogger(__name__)

#: Of the host, by name: what each measures.
HOST_METRICS: dict[str, str] = {
    "host.cpu_percent": "CPU use of the whole host since the last sample, percent",
    "host.memory_percent": "memory in use on the host, percent",
    "host.memory_used_bytes": "memory in use on the host, bytes",
    "host.disk_percent": "use of the file system holding the state folder, percent",
    "host.disk_used_bytes": "use of the file system holding the state folder, bytes",
    "host.load_1m": "the host's 1-minute load average",
}
#: Of the store (host ''), by name.
STORE_METRICS: dict[str, str] = {
    "runs.queued": "runs waiting for a worker",
    "runs.running": "runs a worker or `stageflow run` is executing (paused ones too)",
    "workers.live": "workers with a heartbeat within a lease",
}
#: Of each running task process tree (labels host, pipeline, run_id, task_id, attempt).
TASK_METRICS: dict[str, str] = {
    "task.memory_rss_bytes": "resident memory of a running task's processes, bytes",
    "task.cpu_seconds": "CPU seconds a running task's processes used so far",
}
#: Every name the monitor samples.
METRIC_NAMES: dict[str, str] = {**HOST_METRICS, **STORE_METRICS, **TASK_METRICS}
#: At most this often, samples past their retention are deleted.
PRUNE_SECONDS = 600.0

Probe = Callable[[Path], dict[str, float]]


def slot_of(now: float, interval: float) -> float:
    """The start of the sampling slot holding ``now``: ``now`` rounded down to a
    multiple of ``interval`` (``now`` itself when ``interval`` is 0), to the
    microsecond, so that its ISO 8601 text (as the export writes it) reads back as
    the very same number and a range given in it includes it."""
    if interval <= 0:
        return round(now, 6)
    return round(math.floor(now / interval) * interval, 6)


def retention_cutoff(now: float, retention_hours: float) -> float:
    """Samples with ``at`` below this are past their retention at ``now``."""
    return now - retention_hours * 3600.0


def host_gauges(home: Path) -> dict[str, float]:
    """The host's gauges now (``HOST_METRICS``; ``host.cpu_percent`` since the previous
    call in this process, absent on the first). A figure this platform cannot give
    is left out."""
    import psutil

    out: dict[str, float] = {}
    global _cpu_primed
    cpu = psutil.cpu_percent(interval=None)
    if _cpu_primed:
        out["host.cpu_percent"] = float(cpu)
    _cpu_primed = True
    memory = psutil.virtual_memory()
    out["host.memory_percent"] = float(memory.percent)
    out["host.memory_used_bytes"] = float(memory.total - memory.available)
    folder = home if home.exists() else Path.cwd()
    try:
        disk = psutil.disk_usage(str(folder))
    except OSError:
        pass
    else:
        out["host.disk_percent"] = float(disk.percent)
        out["host.disk_used_bytes"] = float(disk.used)
    with contextlib.suppress(OSError, AttributeError):  # no load average on this platform
        out["host.load_1m"] = float(os.getloadavg()[0])
    return out


_cpu_primed = False


class MonitorDuty:
    """Samples the host's and the store's gauges once per slot; prunes old samples
    (module docstring). ``probe`` gives the host's gauges (``host_gauges`` by
    default); ``host`` names the host (its name by default)."""

    name = "monitor"

    def __init__(
        self,
        store: Store,
        *,
        home: Path,
        interval: float,
        retention_hours: float,
        live_seconds: float,
        host: str | None = None,
        probe: Probe = host_gauges,
    ) -> None:
        self.store = store
        self.home = home
        self.interval = interval
        self.retention_hours = retention_hours
        self.live_seconds = live_seconds
        self.host = host or socket.gethostname()
        self.probe = probe
        self._last_slot: float | None = None
        self._pruned_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> MonitorDuty:
        from stageflow.runtime.claim import lease_terms

        return cls(
            store,
            home=settings.home,
            interval=settings.sampling_interval_seconds,
            retention_hours=settings.metrics_retention_hours,
            live_seconds=lease_terms(settings).seconds,
        )

    def run_pass(self, now: float) -> None:
        """Sample when ``now`` is in a slot not sampled yet; prune when due."""
        slot = slot_of(now, self.interval)
        if self._last_slot is not None and slot <= self._last_slot:
            return
        self._last_slot = slot
        samples = [
            MetricSample(name, slot, value, self.host, {"host": self.host})
            for name, value in self.probe(self.home).items()
            if math.isfinite(value)
        ]
        samples.extend(self._task_gauges(slot))
        samples.extend(self._store_gauges(slot, now))
        added = self.store.add_samples(samples)
        logger.debug("monitor: %d of %d samples new at %.3f", added, len(samples), slot)
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_SECONDS:
            self._pruned_at = now
            gone = self.store.delete_samples_before(retention_cutoff(now, self.retention_hours))
            if gone:
                logger.info("monitor: deleted %d samples past their retention", gone)

    def _task_gauges(self, slot: float) -> list[MetricSample]:
        from stageflow.operators.process_tree import live_trees

        out = []
        for tree in live_trees():
            labels = {"host": self.host, **tree.labels}
            rss_mb, cpu = tree.last_mb, tree.cpu_seconds()
            if rss_mb is not None:
                out.append(
                    MetricSample(
                        "task.memory_rss_bytes", slot, rss_mb * 1024 * 1024, self.host, labels
                    )
                )
            if cpu is not None:
                out.append(MetricSample("task.cpu_seconds", slot, cpu, self.host, labels))
        return out

    def _store_gauges(self, slot: float, now: float) -> list[MetricSample]:
        by_state: dict[str, int] = {}
        for _pipeline, state, n in self.store.run_counts():
            by_state[state] = by_state.get(state, 0) + n
        live = len(self.store.workers(now - self.live_seconds))
        values = {
            "runs.queued": by_state.get("queued", 0),
            "runs.running": by_state.get("running", 0) + by_state.get("paused", 0),
            "workers.live": live,
        }
        return [MetricSample(name, slot, float(v)) for name, v in values.items()]
