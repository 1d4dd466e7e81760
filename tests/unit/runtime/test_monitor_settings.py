"""The monitor's settings: STAGEFLOW_SAMPLING_INTERVAL_SECONDS and
STAGEFLOW_METRICS_RETENTION_HOURS, and the duty every scheduler loop runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.errors import UsageError
from stageflow.runtime.duties import background_duties
from stageflow.runtime.monitor import MonitorDuty
from stageflow.runtime.settings import load_settings
from stageflow.runtime.store import open_store


@pytest.mark.parametrize(
    ("env", "interval", "hours"),
    [
        pytest.param({}, 15.0, 168.0, id="defaults"),
        pytest.param({"STAGEFLOW_SAMPLING_INTERVAL_SECONDS": "0.2"}, 0.2, 168.0, id="fast"),
        pytest.param({"STAGEFLOW_SAMPLING_INTERVAL_SECONDS": "0"}, 15.0, 168.0, id="zero"),
        pytest.param({"STAGEFLOW_METRICS_RETENTION_HOURS": "24"}, 15.0, 24.0, id="a-day"),
    ],
)
def test_settings(env: dict[str, str], interval: float, hours: float) -> None:
    settings = load_settings(env)

    assert (settings.sampling_interval_seconds, settings.metrics_retention_hours) == (
        interval,
        hours,
    )


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        pytest.param("SAMPLING_INTERVAL_SECONDS", "-1", "must not be negative", id="negative"),
        pytest.param("SAMPLING_INTERVAL_SECONDS", "often", "must be a number", id="word"),
        pytest.param("METRICS_RETENTION_HOURS", "nan", "finite", id="nan"),
        pytest.param("SAMPLING_INTERVAL_SECONDS", "100000", "at most 86,400", id="too-long"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(UsageError, match=f"STAGEFLOW_{name} is '{value}'.*{words}"):
        load_settings({f"STAGEFLOW_{name}": value})


def test_every_scheduler_loop_runs_the_monitor(tmp_path: Path) -> None:
    settings = load_settings(
        {"STAGEFLOW_HOME": str(tmp_path), "STAGEFLOW_SAMPLING_INTERVAL_SECONDS": "0.5"}
    )
    store = open_store(None, tmp_path)
    try:
        (monitor,) = [d for d in background_duties(settings, store) if d.name == "monitor"]
        assert isinstance(monitor, MonitorDuty)
        assert (monitor.interval, monitor.retention_hours) == (0.5, 168.0)
        monitor.run_pass(1_800_000_000.3)
        names = {s.name for s in store.metric_samples([], 0, 4e9)}
        assert {"host.memory_percent", "runs.queued", "workers.live"} <= names
    finally:
        store.close()


def test_running_task_trees_are_read_from_their_samplers_not_sampled_again(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from stageflow.operators.process_tree import TreeSampler, live_trees

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    store = open_store(None, tmp_path)
    try:
        labels = {"pipeline": "p", "run_id": "r1", "task_id": "train", "attempt": "1"}
        sampler = TreeSampler(child.pid, labels)
        assert sampler not in live_trees()  # not sampled yet: nothing to report
        assert sampler.sample() is not None
        assert sampler in live_trees()
        duty = MonitorDuty(
            store,
            home=tmp_path,
            interval=1.0,
            retention_hours=1.0,
            live_seconds=30.0,
            host="h1",
            probe=lambda home: {},
        )

        duty.run_pass(1_800_000_000.0)

        got = store.metric_samples(["task.memory_rss_bytes", "task.cpu_seconds"], 0, 4e9)
        assert {s.name for s in got} == {"task.memory_rss_bytes", "task.cpu_seconds"}
        for s in got:
            assert s.labels == {"host": "h1", **labels}
        rss = next(s.value for s in got if s.name == "task.memory_rss_bytes")
        assert rss == sampler.last_mb * 1024 * 1024  # type: ignore[operator]  # sampled above

        child.kill()
        child.wait()
        assert sampler.sample() is None  # its root is gone
        assert sampler not in live_trees()
        duty.run_pass(1_800_000_001.0)
        assert store.metric_samples(["task.memory_rss_bytes"], 1_800_000_001.0, 4e9) == []
    finally:
        child.kill()
        child.wait()
        store.close()
