"""Resilience on real runs: retry strategies with ``retry_on``, timeouts, ``fatal_on``,
``run_timeout_seconds``, circuit breakers across runs, and fallbacks.

Every test runs real pipelines (threads or worker processes, SQLite in a
``tmp_path`` home) and checks what the store recorded. Time is never waited
out: a circuit's reset timeout is crossed by running later runs with a clock
shifted past it, and tasks that must be running when something happens wait
for a marker file.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers_tasks as h
import pytest
import resilience_tasks as rt
from helpers_tasks import assert_durable_and_causal, read_lines, store_of

from stageflow import Pipeline, Task
from stageflow.errors import InvalidSpec
from stageflow.runtime.artifacts import artifact_store, load_output
from stageflow.runtime.plan import check
from stageflow.runtime.result import RunResult
from stageflow.runtime.runner import Runner
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.spec import pipeline_from_data
from stageflow.spec.models import CircuitBreaker, Fallback, RetryPolicy

pytestmark = pytest.mark.slow

EXECUTORS = [pytest.param("thread", id="thread"), pytest.param("process", id="process")]


@pytest.fixture(autouse=True)
def _no_settings_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in set(os.environ) - set(h.clean_environ(os.environ)):
        monkeypatch.delenv(name)


def states(result: RunResult) -> dict[str, str]:
    return {tid: str(t.state) for tid, t in result.tasks.items()}


def run_at(
    pipeline: Pipeline, home: Path, clock: Callable[[], float], executor: str = "thread"
) -> RunResult:
    """A run whose clock is ``clock`` (to cross a timeout without waiting for it)."""
    settings = Settings(home=home)
    store = open_store(settings.database_url, settings.home)
    try:
        runner = Runner(pipeline, store=store, settings=settings, executor=executor, clock=clock)
        return runner.run_new({})
    finally:
        store.close()


# -- retry strategies, retry_on, attempt records ---------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retry_on_retries_only_the_named_errors(executor: str, tmp_path: Path) -> None:
    retry = RetryPolicy(
        max_retries=3,
        delay_seconds=0.01,
        backoff="linear",
        jitter=1.0,
        retry_on=["ConnectionError"],  # TransientError is one; BadInput is not
    )
    logs = {name: str(tmp_path / f"{name}.log") for name in ("transient", "bad")}
    pipeline = Pipeline(
        "retry-on",
        tasks=[
            Task(
                "transient",
                rt.flaky,
                parameters={"log": logs["transient"], "fail_times": 2, "error": "TransientError"},
                retry=retry,
            ),
            Task(
                "bad",
                rt.flaky,
                parameters={"log": logs["bad"], "fail_times": 2, "error": "BadInput"},
                retry=retry,
            ),
        ],
    )
    result = pipeline.run(executor=executor, home=str(tmp_path / "home"))
    assert states(result) == {"transient": "success", "bad": "failed"}
    assert result.output("transient") == "recovered"
    assert len(read_lines(logs["transient"])) == 3
    assert len(read_lines(logs["bad"])) == 1  # not retried
    bad = result.tasks["bad"]
    assert bad.attempts == 1
    assert bad.error is not None and "BadInput: attempt 1 failed" in bad.error
    assert "not retried: not in retry_on" in bad.error
    with store_of(tmp_path / "home") as store:
        attempts = [(a.task_id, a.attempt, a.state) for a in store.attempts(result.run_id)]
        assert attempts == [
            ("transient", 1, "up_for_retry"),
            ("transient", 2, "up_for_retry"),
            ("transient", 3, "success"),
            ("bad", 1, "failed"),
        ]
        for a in store.attempts(result.run_id):
            if a.state != "success":  # every failed attempt keeps its error and traceback
                assert a.error is not None and "attempt" in a.error
                assert "Traceback (most recent call last)" in a.error
                assert "resilience_tasks.py" in a.error


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_missing_package_is_not_retried(executor: str, tmp_path: Path) -> None:
    """A step that calls a stageflow helper needing an extra that is not installed
    (``MissingExtra``) fails at once: another attempt cannot install it."""
    log = str(tmp_path / "missing.log")
    pipeline = Pipeline(
        "missing-extra",
        tasks=[
            Task(
                "load",
                rt.flaky,
                parameters={"log": log, "fail_times": 2, "error": "MissingExtra"},
                retry=RetryPolicy(max_retries=3, delay_seconds=0.01),
            )
        ],
    )
    result = pipeline.run(executor=executor, home=str(tmp_path / "home"))
    assert states(result) == {"load": "failed"}
    assert len(read_lines(log)) == 1  # one attempt, not four
    error = result.tasks["load"].error
    assert error is not None and "MissingExtra: attempt 1 failed" in error
    assert "not retried: another attempt cannot change it" in error


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize(
    ("retry_on", "attempts"),
    [
        pytest.param(["TimeoutError"], 2, id="timeouts-retried"),
        pytest.param(["ConnectionError"], 1, id="timeouts-not-retried"),
    ],
)
def test_a_timed_out_attempt_is_a_failed_attempt_of_class_timeout_error(
    executor: str, retry_on: list[str], attempts: int, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        "attempt-timeout",
        tasks=[
            Task(
                "hang",
                operator="bash",
                parameters={"command": "sleep 30"},
                timeout_seconds=0.3,
                retry=RetryPolicy(max_retries=1, retry_on=retry_on),
            )
        ],
    )
    result = pipeline.run(executor=executor, home=str(tmp_path / "home"))
    assert states(result) == {"hang": "failed"}
    assert result.tasks["hang"].attempts == attempts
    with store_of(tmp_path / "home") as store:
        rows = store.attempts(result.run_id)
    assert len(rows) == attempts
    assert all("timed out after 0.3s" in (a.error or "") for a in rows)


@pytest.mark.parametrize(
    ("retries", "fallback", "expected"),
    [
        pytest.param(2, None, b"2", id="retried"),
        pytest.param(0, Fallback(call="resilience_tasks:big_fallback"), b"F", id="fallback"),
    ],
)
def test_an_abandoned_attempt_never_overwrites_the_committed_output(
    retries: int, fallback: Fallback | None, expected: bytes, tmp_path: Path
) -> None:
    # A thread cannot be killed: the timed-out first attempt goes on after the run
    # ends and stores its own (large, so a file) output when it is released.
    size = 100_000
    gate = tmp_path / "gate"
    gate.mkdir()
    pipeline = Pipeline(
        "abandoned",
        tasks=[
            Task(
                "big",
                rt.slow_first_attempt,
                parameters={"gate": str(gate), "size": size},
                timeout_seconds=0.5,
                retry=RetryPolicy(max_retries=retries, delay_seconds=0.01),
                fallback=fallback,
                cache=True,
            )
        ],
    )
    home = tmp_path / "home"
    try:
        result = pipeline.run(executor="thread", home=str(home))
    finally:
        (gate / "open").touch()
    assert states(result) == {"big": "success"}
    abandoned = rt.ABANDONED.pop(str(gate))
    abandoned.join(20)
    assert not abandoned.is_alive(), "the abandoned attempt never finished"

    with store_of(home) as store:
        ref = store.outputs(result.run_id)["big"]
        assert ref.kind == "file" and ref.uri is not None
        data = Path(ref.uri).read_bytes()
        assert hashlib.sha256(data).hexdigest() == ref.sha256  # the file that was committed
        assert load_output(ref, artifact_store(str(home / "artifacts"))) == expected * size
        assert_durable_and_causal(store, pipeline.upstream_map(), result.run_id)
    if fallback is None:  # a cache hit reads the committed file too
        again = pipeline.run(executor="thread", home=str(home))
        assert again.tasks["big"].note == "cached"
        assert again.output("big") == expected * size


# -- fatal_on ------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", ["task", "defaults"])
def test_fatal_on_stops_a_run_with_independent_branches(
    executor: str, where: str, tmp_path: Path
) -> None:
    marker = tmp_path / "long-started"
    corrupt: dict[str, Any] = {
        "id": "validate",
        "call": "resilience_tasks:wait_for_then_raise",
        "parameters": {"marker": str(marker), "error": "CorruptData"},
        # a fatal error beats retries and the fallback
        "retry": {"max_retries": 3},
        "fallback": {"value": "never used"},
    }
    defaults: dict[str, Any] = {}
    if where == "task":
        corrupt["fatal_on"] = ["CorruptData"]
    else:
        defaults["fatal_on"] = ["resilience_tasks.CorruptData"]
    pipeline = pipeline_from_data(
        {
            "name": "fatal",
            "failure_strategy": "continue",
            "defaults": defaults,
            "tasks": [
                corrupt,
                {
                    "id": "after_validate",
                    "upstream": ["validate"],
                    "operator": "bash",
                    "parameters": {"command": "true"},
                },
                {
                    "id": "long",
                    "operator": "bash",
                    "parameters": {"command": f"touch {marker}; sleep 30"},
                },
                {
                    "id": "after_long",
                    "upstream": ["long"],
                    "operator": "bash",
                    "parameters": {"command": "true"},
                },
            ],
        }
    )
    started = time.monotonic()
    result = pipeline.run(executor=executor, home=str(tmp_path / "home"))
    assert time.monotonic() - started < 25  # the 30 s sleep was stopped, not waited for
    assert result.state == "failed"
    assert states(result) == {
        "validate": "failed",
        "after_validate": "cancelled",
        "long": "cancelled",
        "after_long": "cancelled",
    }
    validate = result.tasks["validate"]
    assert validate.attempts == 1
    assert validate.error is not None
    assert "CorruptData: checksum mismatch" in validate.error and "fatal" in validate.error
    for tid in ("after_validate", "long", "after_long"):
        assert "failed with a fatal error" in (result.tasks[tid].error or "")


# -- run_timeout_seconds --------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_run_timeout_stops_running_attempts_and_fails_the_run(
    executor: str, tmp_path: Path
) -> None:
    pipeline = pipeline_from_data(
        {
            "name": "run-timeout",
            # generous enough for a worker process to start and run `quick` first
            "run_timeout_seconds": 3.0,
            "tasks": [
                {"id": "quick", "operator": "bash", "parameters": {"command": "true"}},
                {
                    "id": "long",
                    "upstream": ["quick"],
                    "operator": "bash",
                    "parameters": {"command": "sleep 30"},
                },
                {
                    "id": "after",
                    "upstream": ["long"],
                    "operator": "bash",
                    "parameters": {"command": "true"},
                },
            ],
        }
    )
    started = time.monotonic()
    result = pipeline.run(executor=executor, home=str(tmp_path / "home"))
    assert time.monotonic() - started < 25
    assert result.state == "failed"
    assert states(result) == {"quick": "success", "long": "cancelled", "after": "cancelled"}
    for tid in ("long", "after"):
        assert "run timed out after 3s (run_timeout_seconds)" in (result.tasks[tid].error or "")
    with store_of(tmp_path / "home") as store:
        assert store.get_run(result.run_id).state == "failed"
        last = store.events(result.run_id)[-1]
        assert (last.task_id, last.to_state) == (None, "failed")
        assert last.message is not None and "run timed out" in last.message


# -- circuit breaker ---------------------------------------------------------------------------


def api_pipeline(task_id: str, log: Path, health: Path) -> Pipeline:
    return Pipeline(
        "billing",
        tasks=[
            Task(
                task_id,
                rt.call_api,
                parameters={"log": str(log), "health": str(health)},
                retry=RetryPolicy(max_retries=1),
                circuit_breaker=CircuitBreaker(
                    name="billing-api", failure_threshold=2, reset_timeout_seconds=60
                ),
            )
        ],
    )


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_circuit_opens_across_runs_and_half_opens_after_its_timeout(
    executor: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    log, health = tmp_path / "calls.log", tmp_path / "health"
    health.write_text("down")

    # run 1: two consecutive failures (an attempt and its retry) open the circuit
    first = run_at(api_pipeline("charge", log, health), home, time.time, executor)
    assert states(first) == {"charge": "failed"}
    assert len(read_lines(log)) == 2
    with store_of(home) as store:
        circuit = store.get_circuit("billing-api")
    assert circuit is not None and (circuit.state, circuit.failures) == ("open", 2)
    opened_until = circuit.opened_until
    assert opened_until is not None

    # run 2, another task sharing the circuit's name: both attempts fail fast, unrun
    second = run_at(api_pipeline("refund", log, health), home, time.time, executor)
    assert states(second) == {"refund": "failed"}
    assert len(read_lines(log)) == 2
    error = second.tasks["refund"].error or ""
    assert "circuit 'billing-api' is open until" in error and "did not run" in error
    assert second.tasks["refund"].attempts == 2

    # run 3, after the timeout: one trial (half-open); it fails: open again, and the
    # retry of that trial fails fast
    later = opened_until + 1 - time.time()
    third = run_at(api_pipeline("charge", log, health), home, lambda: time.time() + later, executor)
    assert states(third) == {"charge": "failed"}
    assert len(read_lines(log)) == 3
    with store_of(home) as store:
        circuit = store.get_circuit("billing-api")
    assert circuit is not None and circuit.state == "open"
    assert circuit.opened_until is not None and circuit.opened_until > opened_until + 59

    # run 4, after that timeout, the service is back: the trial succeeds and closes it
    health.write_text("up")
    later = circuit.opened_until + 1 - time.time()
    fourth = run_at(
        api_pipeline("charge", log, health), home, lambda: time.time() + later, executor
    )
    assert states(fourth) == {"charge": "success"}
    assert fourth.output("charge") == {"status": "ok"}
    assert len(read_lines(log)) == 4
    with store_of(home) as store:
        circuit = store.get_circuit("billing-api")
    assert circuit is not None and (circuit.state, circuit.failures) == ("closed", 0)


# -- fallback ------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_fallback_value_and_call_make_a_final_failure_a_marked_success(
    executor: str, tmp_path: Path
) -> None:
    flaky_log = tmp_path / "flaky.log"
    pipeline = Pipeline(
        "degrade",
        tasks=[
            Task("extract", rt.extract),
            Task("broken", rt.broken, fallback=Fallback(value={"rows": 0})),
            Task("report", rt.report),
            Task(
                "scored",
                call="resilience_tasks:broken",
                upstream=["extract"],
                fallback=Fallback(call="resilience_tasks:degraded"),
            ),
            Task(
                "retried",
                rt.flaky,
                parameters={"log": str(flaky_log), "fail_times": 10, "error": "TransientError"},
                retry=RetryPolicy(max_retries=1),
                fallback=Fallback(value="stale but usable"),
            ),
            Task(
                "hopeless",
                call="resilience_tasks:broken",
                upstream=["extract"],
                fallback=Fallback(call="resilience_tasks:failing_fallback"),
            ),
        ],
    )
    home = tmp_path / "home"
    result = pipeline.run(executor=executor, home=str(home))
    assert states(result) == {
        "extract": "success",
        "broken": "success",
        "report": "success",
        "scored": "success",
        "retried": "success",
        "hopeless": "failed",
    }
    assert result.state == "failed"  # hopeless: its fallback failed too
    assert result.output("broken") == {"rows": 0}
    assert result.output("report") == {"got": {"rows": 0}}  # downstream got the fallback
    scored = result.output("scored")
    assert scored["degraded"] is True and scored["rows"] == 3
    assert "BadInput: cannot score 3 rows" in scored["error"]
    assert result.output("retried") == "stale but usable"
    assert len(read_lines(flaky_log)) == 2  # the fallback came after the retry
    hopeless = result.tasks["hopeless"].error or ""
    assert "BadInput: cannot score 3 rows" in hopeless
    assert "the fallback failed too: RuntimeError: the fallback is broken too" in hopeless

    view = result.as_json()["tasks"]
    for tid in ("broken", "scored", "retried"):
        assert view[tid]["fallback"] is True and view[tid]["cached"] is False
        assert "fallback used" in (view[tid]["error"] or "")
    assert view["extract"]["fallback"] is False and view["hopeless"]["fallback"] is False

    with store_of(home) as store:
        # `runs show` reads the same marks back from the store
        stored = RunResult.from_records(
            store.get_run(result.run_id), store.task_runs(result.run_id)
        ).as_json()["tasks"]
        assert {tid: t["fallback"] for tid, t in stored.items()} == {
            tid: tid in ("broken", "scored", "retried") for tid in view
        }
        events = [
            e
            for e in store.events(result.run_id)
            if e.task_id == "broken" and e.to_state == "success"
        ]
        assert len(events) == 1 and "fallback" in (events[0].message or "")
        (attempt,) = store.attempts(result.run_id, "broken")
        assert attempt.error is not None and "fallback used" in attempt.error
        assert "Traceback (most recent call last)" in attempt.error  # the real failure kept
        assert_durable_and_causal(store, pipeline.upstream_map(), result.run_id)


def test_a_mapped_task_child_that_falls_back_gets_its_own_output(tmp_path: Path) -> None:
    pipeline = Pipeline(
        "mapped-fallback",
        tasks=[
            Task("extract", rt.extract),
            Task("score", rt.score_one, map_over="extract", fallback=Fallback(value=-1)),
        ],
    )
    home = tmp_path / "home"
    result = pipeline.run(executor="thread", home=str(home))

    assert result.state == "success"
    assert result.tasks["score[1]"].note == "fallback"
    assert result.output("score") == [10, -1, 30]
    with store_of(home) as store:
        outputs = store.outputs(result.run_id)
        assert outputs["score[1]"].task_id == "score[1]"
        assert outputs["score"].task_id == "score"
        assert_durable_and_causal(store, pipeline.upstream_map(), result.run_id)


def test_a_fallback_call_is_validated_before_the_run(tmp_path: Path) -> None:
    def pipeline(call: str) -> Pipeline:
        return pipeline_from_data(
            {
                "name": "bad-fallback",
                "tasks": [
                    {"id": "extract", "call": "resilience_tasks:extract"},
                    {
                        "id": "scored",
                        "call": "resilience_tasks:broken",
                        "upstream": ["extract"],
                        "fallback": {"call": call},
                    },
                ],
            }
        )

    check(pipeline("resilience_tasks:degraded"))  # extract, error: provided
    for call, needle in [
        ("resilience_tasks:nothing_here", "cannot import fallback call target"),
        ("not a reference", "is not of the form 'package.module:function'"),
        ("resilience_tasks:counted", "fallback: function counted needs parameter 'log'"),
    ]:
        with pytest.raises(InvalidSpec) as info:
            check(pipeline(call))
        found = [(p.task, p.field, p.message) for p in info.value.problems]
        assert any(t == "scored" and f == "fallback.call" and needle in m for t, f, m in found), (
            found
        )
