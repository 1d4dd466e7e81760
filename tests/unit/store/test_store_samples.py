"""Metric samples (schema 16) and the monitor duty on SQLite and PostgreSQL.

The duty runs with a fake clock (``run_pass(now)``) and a fake host probe: what it
writes per slot, that two processes write one sample per slot, what retention
deletes and when."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.runtime.monitor import PRUNE_SECONDS, MonitorDuty, retention_cutoff, slot_of
from stageflow.runtime.store import SqlStore
from stageflow.runtime.store.base import MetricSample, PipelineRecord, RunRecord, WorkerRecord

T0 = 1_800_000_000.0  # a slot boundary of 15 s and of 0.5 s


def probe(values: dict[str, float]) -> object:
    def read(home: Path) -> dict[str, float]:
        return dict(values)

    return read


def duty(store: SqlStore, host: str = "h1", **values: float) -> MonitorDuty:
    return MonitorDuty(
        store,
        home=Path("."),
        interval=15.0,
        retention_hours=1.0,
        live_seconds=30.0,
        host=host,
        probe=probe(values or {"host.cpu_percent": 12.5, "host.memory_percent": 40.0}),  # type: ignore[arg-type]
    )


def test_add_keeps_the_first_sample_of_a_key(store: SqlStore) -> None:
    first = MetricSample("host.cpu_percent", T0, 10.0, "h1", {"host": "h1"})
    again = MetricSample("host.cpu_percent", T0, 99.0, "h1", {"host": "h1"})
    other_host = MetricSample("host.cpu_percent", T0, 20.0, "h2", {"host": "h2"})

    assert store.add_samples([first]) == 1
    assert store.add_samples([again, other_host]) == 1

    got = store.metric_samples(["host.cpu_percent"], T0, T0)
    assert [(s.host, s.value, s.labels) for s in got] == [
        ("h1", 10.0, {"host": "h1"}),
        ("h2", 20.0, {"host": "h2"}),
    ]


def test_range_is_inclusive_and_filters_names(store: SqlStore) -> None:
    store.add_samples(
        [MetricSample("host.cpu_percent", T0 + i, float(i), "h1") for i in range(10)]
        + [MetricSample("runs.queued", T0 + i, float(i)) for i in range(10)]
    )

    cpu = store.metric_samples(["host.cpu_percent"], T0 + 2, T0 + 5)
    both = store.metric_samples(["runs.queued", "host.cpu_percent"], T0 + 2, T0 + 3)
    every = store.metric_samples([], T0 + 9, T0 + 100)

    assert [s.at - T0 for s in cpu] == [2, 3, 4, 5]
    assert [(s.at - T0, s.name) for s in both] == [
        (2, "host.cpu_percent"),
        (2, "runs.queued"),
        (3, "host.cpu_percent"),
        (3, "runs.queued"),
    ]
    assert [(s.name, s.value) for s in every] == [("host.cpu_percent", 9.0), ("runs.queued", 9.0)]
    assert store.sample_names() == ["host.cpu_percent", "runs.queued"]


def test_latest_is_the_newest_of_each_series(store: SqlStore) -> None:
    store.add_samples(
        [
            MetricSample("host.cpu_percent", T0, 1.0, "h1"),
            MetricSample("host.cpu_percent", T0 + 15, 2.0, "h1"),
            MetricSample("host.cpu_percent", T0, 3.0, "h2"),
            MetricSample("runs.queued", T0 - 600, 4.0),
        ]
    )

    latest = store.latest_samples(T0 - 60)

    assert [(s.name, s.host, s.value) for s in latest] == [
        ("host.cpu_percent", "h1", 2.0),
        ("host.cpu_percent", "h2", 3.0),
    ]


def test_duty_samples_once_per_slot(store: SqlStore) -> None:
    d = duty(store)

    d.run_pass(T0 + 1)
    d.run_pass(T0 + 14.9)  # same slot: nothing
    d.run_pass(T0 + 15)  # next slot

    got = store.metric_samples([], T0 - 1, T0 + 100)
    assert sorted({s.at - T0 for s in got}) == [0.0, 15.0]
    at0 = {(s.name, s.host, s.value) for s in got if s.at == T0}
    assert at0 == {
        ("host.cpu_percent", "h1", 12.5),
        ("host.memory_percent", "h1", 40.0),
        ("runs.queued", "", 0.0),
        ("runs.running", "", 0.0),
        ("workers.live", "", 0.0),
    }


def test_two_processes_write_the_store_gauges_once_and_each_host_its_own(
    store: SqlStore,
) -> None:
    _queue_runs(store, queued=2, running=1)
    store.register_worker(WorkerRecord("w1", "h1", 1, T0 - 100, T0 - 5, {"cpu": 2.0}, 1))
    store.register_worker(WorkerRecord("w2", "h2", 2, T0 - 100, T0 - 300, {}, 1))  # silent

    a, b, c = duty(store, "h1"), duty(store, "h1"), duty(store, "h2", **{"host.cpu_percent": 80.0})
    for d in (a, b, c):
        d.run_pass(T0 + 3)

    got = store.metric_samples([], T0, T0)
    gauges = {(s.name, s.value) for s in got if s.host == ""}
    assert gauges == {("runs.queued", 2.0), ("runs.running", 1.0), ("workers.live", 1.0)}
    assert len([s for s in got if s.host == ""]) == 3  # once, though three processes sampled
    cpu = {(s.host, s.value) for s in got if s.name == "host.cpu_percent"}
    assert cpu == {("h1", 12.5), ("h2", 80.0)}


def test_retention_deletes_only_samples_past_it_and_not_every_pass(store: SqlStore) -> None:
    hour = 3600.0
    store.add_samples(
        [
            MetricSample("runs.queued", T0 - 2 * hour, 1.0),  # past the hour kept
            MetricSample("runs.queued", T0 - hour - 1, 2.0),  # just past
            MetricSample("runs.queued", T0 - hour, 3.0),  # exactly at the cutoff: kept
            MetricSample("runs.queued", T0 - 60, 4.0),
        ]
    )
    d = duty(store)

    d.run_pass(T0)  # first pass prunes

    left = store.metric_samples(["runs.queued"], 0, T0 + 1)
    assert [s.value for s in left] == [3.0, 4.0, 0.0]

    store.add_samples([MetricSample("runs.queued", T0 - 3 * hour, 9.0)])
    d.run_pass(T0 + 15)  # within PRUNE_SECONDS: not pruned again
    assert 9.0 in [s.value for s in store.metric_samples(["runs.queued"], 0, T0 + 100)]

    d.run_pass(T0 + PRUNE_SECONDS)
    assert 9.0 not in [s.value for s in store.metric_samples(["runs.queued"], 0, T0 + 10**4)]
    assert store.delete_samples_before(retention_cutoff(T0, 1.0)) == 0


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        pytest.param(T0 + 14.99, 15.0, T0, id="down-to-slot"),
        pytest.param(T0 + 15.0, 15.0, T0 + 15.0, id="on-boundary"),
        pytest.param(T0 + 0.3, 0.2, T0 + 0.2, id="fraction"),
        pytest.param(T0 + 7.0, 0.0, T0 + 7.0, id="no-interval"),
    ],
)
def test_slot_of(now: float, interval: float, expected: float) -> None:
    assert slot_of(now, interval) == pytest.approx(expected)


def _queue_runs(store: SqlStore, *, queued: int, running: int) -> None:
    store.save_pipeline(PipelineRecord("p", "v1", "{}", T0 - 1000))
    n = 0
    for state, count in (("queued", queued), ("running", running)):
        for _ in range(count):
            n += 1
            store.create_run(RunRecord(f"run{n}", "p", "v1", state, {}, T0 - 100 + n), ["t"])


def test_current_groups_hosts_store_and_running_tasks(store: SqlStore) -> None:
    from stageflow.operations.monitoring import current_metrics

    task = {"host": "h1", "run_id": "r1", "task_id": "train", "attempt": "1"}
    store.add_samples(
        [
            MetricSample("host.cpu_percent", T0 - 15, 5.0, "h1", {"host": "h1"}),
            MetricSample("host.cpu_percent", T0, 7.0, "h1", {"host": "h1"}),
            MetricSample("runs.queued", T0, 2.0),
            MetricSample("task.memory_rss_bytes", T0, 3e6, "h1", task),
            # a task last seen long ago has ended: not shown as running
            MetricSample("task.memory_rss_bytes", T0 - 45, 1e6, "h1", {**task, "run_id": "r0"}),
            MetricSample("host.memory_percent", T0 - 3600, 50.0, "h9", {"host": "h9"}),  # stale
        ]
    )

    now = current_metrics(store, T0 + 1, 15.0)

    assert now.hosts == {"h1": {"host.cpu_percent": 7.0}}
    assert now.store == {"runs.queued": 2.0}
    assert [(s.labels["run_id"], s.value) for s in now.tasks] == [("r1", 3e6)]
    assert now.sampled_at == T0
    assert now.as_json()["tasks"][0]["labels"]["task_id"] == "train"
