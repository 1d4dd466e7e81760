"""Caching on real runs: unchanged re-runs are all cached, a parameter change re-runs
only that task and what its output reaches, input files' versions, TTLs,
``--no-cache``, what is never cached, and entries on PostgreSQL.

Tasks count their executions in log files (``resilience_tasks.counted`` & co),
so "cached" is checked by what did *not* run, not by timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import helpers_tasks as h
import pytest
import resilience_tasks as rt
from helpers_tasks import assert_durable_and_causal, read_lines, store_of

from stageflow import Pipeline, Task
from stageflow.runtime.result import RunResult
from stageflow.runtime.runner import Runner, run_pipeline
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.spec.models import Fallback, TaskDefaults
from support.postgres import postgres_schema, require_postgres

pytestmark = pytest.mark.slow

EXECUTORS = [pytest.param("thread", id="thread"), pytest.param("process", id="process")]
STAGEFLOW = Path(sys.executable).with_name("stageflow")


@pytest.fixture(autouse=True)
def _no_settings_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in set(os.environ) - set(h.clean_environ(os.environ)):
        monkeypatch.delenv(name)


def cached(result: RunResult) -> dict[str, bool]:
    return {tid: t["cached"] for tid, t in result.as_json()["tasks"].items()}


def counts(logs: dict[str, Path]) -> dict[str, int]:
    return {tid: len(read_lines(path)) for tid, path in logs.items()}


def shaped(tmp_path: Path, value: list[int]) -> tuple[Pipeline, dict[str, Path]]:
    """counted -> {double, parity}; parity -> parity_sum; {double, parity} -> total;
    side (alone); always (cache: false). Cached by the pipeline's default."""
    ids = ("counted", "double", "parity", "parity_sum", "total", "side", "always")
    logs = {tid: tmp_path / f"{tid}.log" for tid in ids}
    p = {tid: {"log": str(logs[tid])} for tid in ids}
    pipeline = Pipeline(
        "cached",
        defaults=TaskDefaults(cache=True),
        tasks=[
            Task("counted", rt.counted, parameters={**p["counted"], "value": value}),
            Task("double", rt.double, parameters=p["double"]),
            Task("parity", rt.parity, parameters=p["parity"]),
            Task("parity_sum", rt.total, parameters=p["parity_sum"], upstream=["parity"]),
            Task("total", rt.total, parameters=p["total"], upstream=["double", "parity"]),
            Task("side", rt.counted, parameters={**p["side"], "value": "x"}),
            Task("always", rt.counted, parameters={**p["always"], "value": 1}, cache=False),
        ],
    )
    return pipeline, logs


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_unchanged_rerun_is_all_cached(executor: str, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    pipeline, logs = shaped(tmp_path, [1, 2, 3, 4])
    first = pipeline.run(executor=executor, home=home)
    assert first.state == "success"
    assert not any(cached(first).values())
    assert counts(logs) == dict.fromkeys(logs, 1)

    second = pipeline.run(executor=executor, home=home)
    assert second.state == "success"
    assert cached(second) == {tid: tid != "always" for tid in logs}
    assert counts(logs) == {tid: 2 if tid == "always" else 1 for tid in logs}
    assert {tid: second.output(tid) for tid in logs} == {tid: first.output(tid) for tid in logs}
    assert second.output("total") == 20 + 2
    with store_of(tmp_path / "home") as store:
        before, after = store.outputs(first.run_id), store.outputs(second.run_id)
        assert {t: r.sha256 for t, r in after.items()} == {t: r.sha256 for t, r in before.items()}
        assert {r.run_id for r in after.values()} == {second.run_id}
        assert_durable_and_causal(store, pipeline.upstream_map(), second.run_id)
        rows = {t.task_id: (t.state, t.note) for t in store.task_runs(second.run_id)}
        assert rows["double"] == ("success", "cached") and rows["always"] == ("success", None)
        message = next(
            e.message
            for e in store.events(second.run_id)
            if e.task_id == "double" and e.to_state == "success"
        )
        assert message is not None and f"cached: output of run {first.run_id}" in message

    # A file a task writes (here its log, named in its parameters) is in its key as
    # the task left it: untouched, the task hits (above); deleted, the task runs again.
    logs["side"].unlink()
    third = pipeline.run(executor=executor, home=home)
    assert cached(third) == {tid: tid not in ("side", "always") for tid in logs}
    assert counts(logs)["side"] == 1  # the new log has the one new line


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_parameter_change_reruns_only_that_task_and_what_its_output_reaches(
    executor: str, tmp_path: Path
) -> None:
    home = str(tmp_path / "home")
    pipeline, logs = shaped(tmp_path, [1, 2, 3, 4])
    pipeline.run(executor=executor, home=home)

    # [3, 4, 5, 6] has the same parities as [1, 2, 3, 4]: parity re-runs (its input
    # changed) but writes the same bytes, so parity_sum is a legitimate cache hit
    changed, _ = shaped(tmp_path, [3, 4, 5, 6])
    result = changed.run(executor=executor, home=home)
    assert result.state == "success"
    assert cached(result) == {
        "counted": False,
        "double": False,
        "parity": False,
        "parity_sum": True,
        "total": False,
        "side": True,
        "always": False,
    }
    assert counts(logs) == {
        "counted": 2,
        "double": 2,
        "parity": 2,
        "parity_sum": 1,
        "total": 2,
        "side": 1,
        "always": 2,
    }
    assert result.output("double") == [6, 8, 10, 12]
    assert result.output("total") == 36 + 2


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_rewritten_input_file_invalidates_the_task_that_reads_it(
    executor: str, tmp_path: Path
) -> None:
    home = str(tmp_path / "home")
    source = tmp_path / "data.txt"
    source.write_text("a b c")
    log = tmp_path / "ingest.log"
    pipeline = Pipeline(
        "ingest",
        tasks=[
            Task(
                "ingest",
                rt.read_source,
                parameters={"log": str(log), "path": str(source)},
                cache=True,
            )
        ],
    )

    def run() -> RunResult:
        result = pipeline.run(executor=executor, home=home)
        assert result.state == "success"
        return result

    run()
    assert cached(run()) == {"ingest": True}
    # same size, new modification time: the source's version changed
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cached(run()) == {"ingest": False}
    assert cached(run()) == {"ingest": True}
    source.write_text("a b c d")  # new size
    result = run()
    assert cached(result) == {"ingest": False}
    assert result.output("ingest") == 4
    assert len(read_lines(log)) == 3


def test_cache_ttl_bounds_staleness(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "stamp.log"
    stamp = Task("stamp", rt.stamp, parameters={"log": str(log)}, cache=True, cache_ttl_seconds=60)
    pipeline = Pipeline("ttl", tasks=[stamp])
    settings = Settings(home=home)

    def run_at(offset: float) -> RunResult:
        """A run whose clock is ``offset`` seconds ahead (no waiting for the TTL)."""
        store = open_store(settings.database_url, settings.home)
        try:
            clock: Callable[[], float] = lambda: time.time() + offset  # noqa: E731
            return Runner(pipeline, store=store, settings=settings, clock=clock).run_new({})
        finally:
            store.close()

    first = run_at(0)
    assert cached(run_at(30)) == {"stamp": True}
    assert len(read_lines(log)) == 1
    late = run_at(61)  # more than 60 s after the entry was made
    assert cached(late) == {"stamp": False}
    assert late.output("stamp") != first.output("stamp")
    assert len(read_lines(log)) == 2
    # The late run deleted the expired entry when it started; the one it wrote
    # expires 60 s after the late run's clock, not before.
    with store_of(home) as store:
        assert store.delete_expired_cache(time.time() + 90) == 0
        assert store.delete_expired_cache(time.time() + 200) == 1


def test_failures_and_fallbacks_are_never_cached(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    flaky_log = tmp_path / "flaky.log"
    pipeline = Pipeline(
        "uncacheable",
        defaults=TaskDefaults(cache=True),
        tasks=[
            Task("extract", rt.extract),
            Task("broken", rt.broken, fallback=Fallback(value={"rows": 0})),
            Task(
                "flaky",
                rt.flaky,
                parameters={"log": str(flaky_log), "fail_times": 1, "error": "BadInput"},
            ),
        ],
    )
    first = pipeline.run(home=home)
    assert {t: s.state for t, s in first.tasks.items()} == {
        "extract": "success",
        "broken": "success",
        "flaky": "failed",
    }
    second = pipeline.run(home=home)
    assert second.state == "success"
    assert cached(second) == {"extract": True, "broken": False, "flaky": False}
    assert second.as_json()["tasks"]["broken"]["fallback"] is True
    assert cached(pipeline.run(home=home)) == {"extract": True, "broken": False, "flaky": True}


# -- the CLI: --no-cache, and what `runs show` says -----------------------------------------

STEPS = """\
from pathlib import Path

def load(log):
    with open(log, "a") as f:
        f.write("load\\n")
    return [1, 2, 3]

def total(load):
    return sum(load)
"""

SPEC = """\
name: cli-cache
defaults: {cache: true}
tasks:
  - {id: load, call: "cache_steps:load", parameters: {log: "LOG"}}
  - {id: total, call: "cache_steps:total", upstream: [load]}
"""


def sf(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = h.clean_environ(os.environ)
    env["STAGEFLOW_HOME"] = str(home)
    proc = subprocess.run(
        [str(STAGEFLOW), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc
    return proc


def test_no_cache_forces_execution_and_refreshes_the_entries(tmp_path: Path) -> None:
    home, log = tmp_path / "home", tmp_path / "load.log"
    (tmp_path / "cache_steps.py").write_text(STEPS)
    (tmp_path / "spec.yaml").write_text(SPEC.replace("LOG", str(log)))

    first = sf(home, tmp_path, "run", "spec.yaml", "--format", "json")
    assert first.returncode == 0, first
    doc = json.loads(first.stdout)
    assert {t: v["cached"] for t, v in doc["tasks"].items()} == {"load": False, "total": False}

    text = sf(home, tmp_path, "run", "spec.yaml")
    assert text.returncode == 0, text
    assert "success (cached)" in text.stdout
    assert "2 of 2 tasks cached" in text.stdout
    assert "output of total: 6" in text.stdout
    assert len(read_lines(log)) == 1

    forced = sf(home, tmp_path, "run", "spec.yaml", "--no-cache", "--format", "json")
    assert forced.returncode == 0, forced
    forced_doc = json.loads(forced.stdout)
    assert {t: v["cached"] for t, v in forced_doc["tasks"].items()} == {
        "load": False,
        "total": False,
    }
    assert len(read_lines(log)) == 2

    again = sf(home, tmp_path, "run", "spec.yaml", "--format", "json")
    run_id = json.loads(again.stdout)["run_id"]
    shown = sf(home, tmp_path, "runs", "show", run_id, "--format", "json")
    assert shown.returncode == 0, shown
    tasks = json.loads(shown.stdout)["tasks"]
    assert {t: (v["state"], v["cached"]) for t, v in tasks.items()} == {
        "load": ("success", True),
        "total": ("success", True),
    }
    # the refreshed entries point at the --no-cache run's outputs
    with store_of(home) as store:
        events = store.events(run_id)
    reused = [e.message or "" for e in events if e.task_id and e.to_state == "success"]
    assert len(reused) == 2
    assert all(f"output of run {forced_doc['run_id']}" in m for m in reused), reused


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    base = Settings(home=tmp_path / "home")
    if request.param == "sqlite":
        yield base
        return
    require_postgres()
    with postgres_schema() as url:
        yield replace(base, database_url=url)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cache_entries_live_in_either_store(
    settings: Settings, executor: str, tmp_path: Path
) -> None:
    pipeline, logs = shaped(tmp_path, [5, 6])
    run: Callable[[], RunResult] = lambda: run_pipeline(  # noqa: E731
        pipeline, settings=settings, executor=executor
    )
    first = run()
    second = run()
    assert (first.state, second.state) == ("success", "success")
    assert cached(second) == {tid: tid != "always" for tid in logs}
    assert counts(logs) == {tid: 2 if tid == "always" else 1 for tid in logs}
    store = open_store(settings.database_url, settings.home)
    try:
        outputs = store.outputs(second.run_id)
        assert {t.task_id: t.note for t in store.task_runs(second.run_id)}["counted"] == "cached"
        assert outputs["counted"].sha256 == store.outputs(first.run_id)["counted"].sha256
    finally:
        store.close()
