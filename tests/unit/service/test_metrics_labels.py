"""The API's ``/metrics`` read from a real SQLite store: mapped elements' attempts in
one ``task`` series, the ``task`` and ``pipeline`` label caps (the rest summed under
``other``), live workers' capacity, what running attempts hold of it, and a store
error that leaves the scrape answering (``ApiMetrics.text()`` parsed back)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stageflow.errors import StoreError
from stageflow.runtime.store import (
    AttemptRecord,
    Batch,
    RunRecord,
    Store,
    TaskRunRecord,
    open_store,
)
from stageflow.runtime.store.base import WorkerRecord
from stageflow.service.api import metrics as metrics_module
from stageflow.service.api.metrics import ApiMetrics

INF = math.inf
TASK_DURATION = "stageflow_task_duration_seconds"
RUN_DURATION = "stageflow_run_duration_seconds"

#: sample name -> {sorted (label, value) pairs: value}
Scrape = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "home")
    try:
        yield opened
    finally:
        opened.close()


def make_run(
    run_id: str,
    pipeline: str = "churn",
    state: str = "running",
    *,
    started_at: float | None = None,
    ended_at: float | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        pipeline_version="v1",
        state=state,
        params={},
        created_at=0.0,
        started_at=started_at,
        ended_at=ended_at,
    )


def make_worker(owner: str, heartbeat_at: float, capacity: dict[str, float]) -> WorkerRecord:
    return WorkerRecord(
        owner=owner,
        host="node-1",
        pid=4242,
        started_at=heartbeat_at - 10.0,
        heartbeat_at=heartbeat_at,
        capacity=capacity,
        concurrency=2,
    )


def scrape(store: Store) -> Scrape:
    text = ApiMetrics(store, lease_seconds=15.0).text()
    assert isinstance(text, bytes)
    out: Scrape = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def values(scraped: Scrape, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Every sample of ``name`` keyed by the values of ``labels`` (which must be all of
    its labels)."""
    out: dict[tuple[str, ...], float] = {}
    for pairs, value in scraped[name].items():
        found = dict(pairs)
        assert set(found) == set(labels), (name, found)
        out[tuple(found[label] for label in labels)] = value
    return out


def histogram(scraped: Scrape, name: str, **labels: str) -> tuple[float, float, dict[float, float]]:
    """(count, sum, {bucket bound: cumulative count}) of the series with ``labels``."""
    key = tuple(sorted(labels.items()))
    buckets = {
        float(dict(pairs)["le"]): value
        for pairs, value in scraped[f"{name}_bucket"].items()
        if tuple(p for p in pairs if p[0] != "le") == key
    }
    return scraped[f"{name}_count"][key], scraped[f"{name}_sum"][key], buckets


def cumulative(bounds: tuple[float, ...], observed: list[float]) -> dict[float, float]:
    return {b: float(sum(v <= b for v in observed)) for b in (*bounds, INF)}


TASK_BOUNDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
RUN_BOUNDS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


# -- task durations: mapped elements in one series ------------------------------------


def test_mapped_elements_attempts_are_one_task_series_with_exact_buckets(store: Store) -> None:
    store.create_run(make_run("c1", state="success"), ["prep", "train[0]", "train[1]", "train[2]"])
    store.commit(
        Batch(
            attempts=[
                AttemptRecord("c1", "prep", 1, "success", 1.0, 3.0),  # 2.0
                AttemptRecord("c1", "train[0]", 1, "success", 10.0, 10.5),  # 0.5: on a bound
                AttemptRecord("c1", "train[1]", 1, "failed", 20.0, 25.0, "x"),  # 5.0: on a bound
                AttemptRecord("c1", "train[2]", 1, "success", 30.0, 50.0),  # 20.0
                AttemptRecord("c1", "train[2]", 2, "running", 60.0),  # not ended: left out
            ]
        )
    )
    scraped = scrape(store)
    assert values(scraped, f"{TASK_DURATION}_count", "pipeline", "task") == {
        ("churn", "prep"): 1.0,
        ("churn", "train"): 3.0,
    }
    count, total, buckets = histogram(scraped, TASK_DURATION, pipeline="churn", task="train")
    assert (count, total) == (3.0, 25.5)
    assert buckets == {
        0.1: 0.0,
        0.5: 1.0,
        1.0: 1.0,
        5.0: 2.0,
        15.0: 2.0,
        60.0: 3.0,
        300.0: 3.0,
        900.0: 3.0,
        3600.0: 3.0,
        14400.0: 3.0,
        86400.0: 3.0,
        INF: 3.0,
    }
    assert buckets == cumulative(TASK_BOUNDS, [0.5, 5.0, 20.0])
    assert histogram(scraped, TASK_DURATION, pipeline="churn", task="prep") == (
        1.0,
        2.0,
        cumulative(TASK_BOUNDS, [2.0]),
    )


# -- the task cap ----------------------------------------------------------------------


def test_task_cap_keeps_the_busiest_pair_and_sums_the_rest_per_pipeline(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "TASK_LABELS", 1)
    store.create_run(make_run("c1"), ["prep", "evaluate", "train[0]", "train[1]", "train[2]"])
    store.create_run(make_run("f1", "fraud"), ["load", "score"])
    store.commit(
        Batch(
            attempts=[
                # churn/train: 3 attempts, the busiest pair
                AttemptRecord("c1", "train[0]", 1, "success", 0.0, 4.0),
                AttemptRecord("c1", "train[1]", 1, "success", 0.0, 8.0),
                AttemptRecord("c1", "train[2]", 1, "success", 0.0, 16.0),
                # churn/prep (2) and churn/evaluate (1): churn/other
                AttemptRecord("c1", "prep", 1, "failed", 0.0, 0.25, "x"),
                AttemptRecord("c1", "prep", 2, "success", 1.0, 2.0),
                AttemptRecord("c1", "evaluate", 1, "success", 0.0, 100.0),
                # fraud/load and fraud/score (1 each): fraud/other
                AttemptRecord("f1", "load", 1, "success", 0.0, 0.5),
                AttemptRecord("f1", "score", 1, "success", 0.0, 1000.0),
            ]
        )
    )
    scraped = scrape(store)
    assert values(scraped, f"{TASK_DURATION}_count", "pipeline", "task") == {
        ("churn", "other"): 3.0,
        ("churn", "train"): 3.0,
        ("fraud", "other"): 2.0,
    }
    assert values(scraped, f"{TASK_DURATION}_sum", "pipeline", "task") == {
        ("churn", "other"): 101.25,
        ("churn", "train"): 28.0,
        ("fraud", "other"): 1000.5,
    }
    assert histogram(scraped, TASK_DURATION, pipeline="churn", task="other")[2] == cumulative(
        TASK_BOUNDS, [0.25, 1.0, 100.0]
    )
    assert histogram(scraped, TASK_DURATION, pipeline="fraud", task="other")[2] == cumulative(
        TASK_BOUNDS, [0.5, 1000.0]
    )
    assert histogram(scraped, TASK_DURATION, pipeline="churn", task="train")[2] == cumulative(
        TASK_BOUNDS, [4.0, 8.0, 16.0]
    )


# -- the pipeline cap ------------------------------------------------------------------


def test_pipeline_cap_keeps_the_pipeline_with_most_runs_and_sums_the_rest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "PIPELINE_LABELS", 1)
    # churn: 4 runs (kept); ads: 2 runs, fraud: 1 run (both "other")
    store.create_run(make_run("c1", state="success", started_at=0.0, ended_at=10.0), ["a", "b"])
    store.create_run(make_run("c2", state="success", started_at=0.0, ended_at=60.0), ["a", "b"])
    store.create_run(make_run("c3", started_at=0.0), ["a", "b"])
    store.create_run(make_run("c4", state="queued"), ["a", "b"])
    store.create_run(
        make_run("f1", "fraud", "success", started_at=100.0, ended_at=101.0), ["a"]
    )  # 1.0: on a bound
    store.create_run(make_run("a1", "ads", "success", started_at=0.0, ended_at=4.0), ["a", "b"])
    store.create_run(make_run("a2", "ads", "failed", started_at=0.0, ended_at=1000.0), ["a"])
    store.commit(
        Batch(
            task_runs=[
                TaskRunRecord("c1", "a", "success", 1, 0.0, 2.0),
                TaskRunRecord("c1", "b", "success", 1, 2.0, 10.0),
                TaskRunRecord("f1", "a", "success", 1, 100.0, 101.0),
                TaskRunRecord("a1", "a", "success", 1, 0.0, 0.25),
                TaskRunRecord("a1", "b", "failed", 1, 1.0, 4.0, "boom"),
            ],
            attempts=[
                AttemptRecord("c1", "a", 1, "success", 0.0, 2.0),
                AttemptRecord("f1", "a", 1, "success", 100.0, 101.0),
                AttemptRecord("a1", "a", 1, "success", 0.0, 0.25),
                AttemptRecord("a1", "b", 1, "failed", 1.0, 4.0, "boom"),
            ],
        )
    )
    scraped = scrape(store)
    assert values(scraped, "stageflow_runs", "pipeline", "state") == {
        ("churn", "queued"): 1.0,
        ("churn", "running"): 1.0,
        ("churn", "success"): 2.0,
        ("other", "failed"): 1.0,
        ("other", "success"): 2.0,
    }
    assert values(scraped, "stageflow_task_runs", "pipeline", "state") == {
        ("churn", "pending"): 6.0,
        ("churn", "success"): 2.0,
        ("other", "failed"): 1.0,
        ("other", "pending"): 1.0,
        ("other", "success"): 2.0,
    }
    assert values(scraped, f"{RUN_DURATION}_count", "pipeline") == {
        ("churn",): 2.0,
        ("other",): 3.0,
    }
    assert histogram(scraped, RUN_DURATION, pipeline="churn") == (
        2.0,
        70.0,
        cumulative(RUN_BOUNDS, [10.0, 60.0]),
    )
    assert histogram(scraped, RUN_DURATION, pipeline="other") == (
        3.0,
        1005.0,
        cumulative(RUN_BOUNDS, [1.0, 4.0, 1000.0]),
    )
    assert values(scraped, f"{TASK_DURATION}_count", "pipeline", "task") == {
        ("churn", "a"): 1.0,
        ("other", "a"): 2.0,
        ("other", "b"): 1.0,
    }
    assert histogram(scraped, TASK_DURATION, pipeline="other", task="a") == (
        2.0,
        1.25,
        cumulative(TASK_BOUNDS, [1.0, 0.25]),
    )
    assert histogram(scraped, TASK_DURATION, pipeline="other", task="b") == (
        1.0,
        3.0,
        cumulative(TASK_BOUNDS, [3.0]),
    )
    assert values(scraped, "stageflow_runs_queued") == {(): 1.0}
    assert values(scraped, "stageflow_runs_active") == {(): 1.0}


# -- workers and capacity --------------------------------------------------------------


def test_live_workers_count_and_sum_their_capacity_a_stale_one_does_not(store: Store) -> None:
    now = time.time()
    store.register_worker(make_worker("w-a", now, {"cpu": 8.0, "memory_gb": 32.0}))
    store.register_worker(make_worker("w-b", now, {"cpu": 4.0, "gpu": 1.0}))
    store.register_worker(make_worker("w-stale", now - 100.0, {"cpu": 100.0, "tpu": 4.0}))
    scraped = scrape(store)
    assert values(scraped, "stageflow_workers") == {(): 2.0}
    assert values(scraped, "stageflow_capacity", "resource") == {
        ("cpu",): 12.0,
        ("gpu",): 1.0,
        ("memory_gb",): 32.0,
    }
    assert values(scraped, "stageflow_capacity_in_use", "resource") == {
        ("cpu",): 0.0,
        ("gpu",): 0.0,
        ("memory_gb",): 0.0,
    }


def test_no_live_worker_when_every_heartbeat_is_stale(store: Store) -> None:
    store.register_worker(make_worker("w-stale", time.time() - 100.0, {"cpu": 8.0}))
    scraped = scrape(store)
    assert values(scraped, "stageflow_workers") == {(): 0.0}
    assert "stageflow_capacity" not in scraped
    assert "stageflow_capacity_in_use" not in scraped


def test_capacity_in_use_is_what_running_attempts_of_running_runs_hold(store: Store) -> None:
    store.register_worker(
        make_worker("w-a", time.time(), {"cpu": 8.0, "memory_gb": 32.0, "gpu": 2.0})
    )
    store.create_run(make_run("r1", started_at=1.0), ["train", "prep"])
    store.create_run(make_run("d1", state="success", started_at=1.0, ended_at=5.0), ["train"])
    store.commit(
        Batch(
            task_runs=[
                TaskRunRecord("r1", "train", "running", 1, 10.0),
                TaskRunRecord("r1", "prep", "success", 1, 1.0, 3.0),
            ],
            attempts=[
                AttemptRecord("r1", "train", 1, "running", 10.0, request_json=REQUEST),
                # ended: holds nothing any more
                AttemptRecord("r1", "prep", 1, "success", 1.0, 3.0, request_json=ENDED),
                # its run ended: holds nothing
                AttemptRecord("d1", "train", 1, "running", 2.0, request_json=ENDED),
            ],
        )
    )
    scraped = scrape(store)
    assert values(scraped, "stageflow_capacity_in_use", "resource") == {
        ("cpu",): 2.0,
        ("gpu",): 0.0,
        ("memory_gb",): 4.0,
    }
    assert values(scraped, "stageflow_capacity", "resource") == {
        ("cpu",): 8.0,
        ("gpu",): 2.0,
        ("memory_gb",): 32.0,
    }
    assert values(scraped, "stageflow_tasks_active", "state") == {
        ("running",): 1.0,
        ("success",): 1.0,
    }


REQUEST = '{"cpu": 2, "memory_gb": 4}'
ENDED = '{"cpu": 16, "gpu": 1}'


# -- a failing store -------------------------------------------------------------------


class FailingStore:
    """The real store, but ``failing`` raises ``StoreError``."""

    def __init__(self, store: Store, failing: str) -> None:
        self._store = store
        self._failing = failing
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        if name == self._failing:

            def fail(*args: object, **kwargs: object) -> Any:
                raise StoreError("database is locked")

            return fail
        return getattr(self._store, name)


def test_a_store_error_leaves_the_scrape_answering_with_the_uptime(store: Store) -> None:
    store.create_run(make_run("c1"), ["a"])
    failing = FailingStore(store, "run_counts")
    text = ApiMetrics(cast("Store", failing), lease_seconds=15.0).text()
    assert "run_counts" in failing.calls
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    (uptime,) = families["stageflow_api_uptime_seconds"].samples
    assert 0.0 <= uptime.value < 60.0
    assert "stageflow_runs" not in families
    assert "stageflow_workers" not in families


def test_a_store_error_late_in_the_scrape_keeps_what_came_before(store: Store) -> None:
    store.create_run(make_run("c1"), ["a"])
    failing = FailingStore(store, "workers")
    text = ApiMetrics(cast("Store", failing), lease_seconds=15.0).text()
    assert "workers" in failing.calls
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert "stageflow_api_uptime_seconds" in families
    assert [(s.labels, s.value) for s in families["stageflow_runs"].samples] == [
        ({"pipeline": "churn", "state": "running"}, 1.0)
    ]
    assert "stageflow_workers" not in families
