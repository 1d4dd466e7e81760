"""Sensors in the pure ``Scheduler``, with a fake clock and no sleeps.

A sensor whose trigger rule is met moves ``pending -> sensing`` and holds no
worker slot: ``pokes_due(now)`` hands out its checks (the first at once, then
every ``poke_interval``, the last at its deadline), ``sensed`` records each one:
met -> ``success``; unmet at or past the deadline -> ``failed``, or ``skipped``
with ``soft_fail``. Ordinary tasks keep the worker slots meanwhile.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from stageflow.engine import EnginePlan, RunState, Scheduler, TaskState, Transition
from stageflow.engine.sensors import SensorPolicy, span
from stageflow.engine.states import TASK_TRANSITIONS
from stageflow.spec.models import RetryPolicy, TriggerRule

S = TaskState


def make_plan(
    upstream: dict[str, list[str]],
    sensors: dict[str, SensorPolicy],
    rules: dict[str, TriggerRule] | None = None,
) -> EnginePlan:
    ids = list(upstream)
    index = {tid: i for i, tid in enumerate(ids)}
    return EnginePlan(
        ids=ids,
        upstream=[[index[u] for u in upstream[t]] for t in ids],
        rules=[(rules or {}).get(t, TriggerRule.ALL_SUCCESS) for t in ids],
        retries=[RetryPolicy()] * len(ids),
        priorities=[0] * len(ids),
        sensors=[sensors.get(t) for t in ids],
    )


WAIT = SensorPolicy(poke_interval=10.0, timeout=35.0, waits_for="file in/*.csv")


def checked(out: list[Transition]) -> list[tuple[str, TaskState]]:
    """(task, new state) of each move, each checked against the state table."""
    for t in out:
        assert t.new in TASK_TRANSITIONS[t.old]
    return [(t.task_id, t.new) for t in out]


def test_sensor_waits_without_a_worker_and_succeeds_when_met() -> None:
    sched = Scheduler(make_plan({"wait": [], "load": ["wait"]}, {"wait": WAIT}))
    start = sched.start(0.0)
    assert checked(start) == [("wait", S.SENSING)]
    assert start[0].attempt == 1 and start[0].due_at == 35.0
    assert "file in/*.csv" in (start[0].message or "")
    assert sched.sensing == 1 and sched.running == 0 and not sched.has_ready
    assert sched.next_due() == 0.0
    assert sched.pokes_due(0.0) == ["wait"]
    assert sched.pokes_due(0.0) == []  # in flight: not handed out twice
    assert sched.next_due() is None
    assert sched.sensed("wait", False, 1.0, "no match") == []
    assert sched.next_due() == 11.0  # poke_interval after the last poke ended
    assert sched.pokes_due(10.9) == []
    assert sched.pokes_due(11.0) == ["wait"]
    out = sched.sensed("wait", True, 12.0, "found 1 file")
    assert checked(out) == [("wait", S.SUCCESS), ("load", S.QUEUED)]
    assert out[0].message == "found 1 file"
    assert sched.sensing == 0
    assert [t.task_id for t in sched.pop_ready(1, 12.0)] == ["load"]


@pytest.mark.parametrize(
    ("soft_fail", "end", "run_state"),
    [
        pytest.param(False, S.FAILED, RunState.FAILED, id="fails"),
        pytest.param(True, S.SKIPPED, RunState.SUCCESS, id="soft-fail-skips"),
    ],
)
def test_sensor_times_out(soft_fail: bool, end: TaskState, run_state: RunState) -> None:
    policy = SensorPolicy(poke_interval=10.0, timeout=25.0, soft_fail=soft_fail)
    rules = {"after_all": TriggerRule.ALL_DONE}
    plan = make_plan({"wait": [], "load": ["wait"], "after_all": ["wait"]}, {"wait": policy}, rules)
    sched = Scheduler(plan)
    sched.start(0.0)
    at = [0.0]
    while sched.sensing:
        due = sched.next_due()
        assert due is not None
        at.append(due)
        (tid,) = sched.pokes_due(due)
        out = sched.sensed(tid, False, due, "still nothing")
    assert at == [0.0, 0.0, 10.0, 20.0, 25.0]  # the last poke is due at the deadline
    states = dict(checked(out))
    assert states["wait"] is end
    assert states["load"] is (S.SKIPPED if soft_fail else S.UPSTREAM_FAILED)
    assert states["after_all"] is S.QUEUED
    assert "sensor timed out after 25s (timeout)" in (out[0].message or "")
    assert "still nothing" in (out[0].message or "")
    (started,) = sched.pop_ready(1, 26.0)
    sched.record(started.task_id, started.attempt, True, 26.0)
    assert sched.finished and sched.run_state() is run_state


def test_a_met_poke_past_the_deadline_still_succeeds() -> None:
    sched = Scheduler(make_plan({"wait": []}, {"wait": WAIT}))
    sched.start(0.0)
    sched.pokes_due(0.0)
    assert [t.new for t in sched.sensed("wait", True, 99.0)] == [S.SUCCESS]


def test_many_sensors_leave_the_workers_to_a_chain() -> None:
    """1,000 waiting sensors and a chain of 5 tasks on 2 workers: the chain runs to
    its end while every sensor waits; then the sensors are met and the run succeeds."""
    ups: dict[str, list[str]] = {f"s{k}": [] for k in range(1000)}
    chain = [f"c{k}" for k in range(5)]
    for k, tid in enumerate(chain):
        ups[tid] = [chain[k - 1]] if k else []
    ups["end"] = [*(f"s{k}" for k in range(1000)), chain[-1]]
    sched = Scheduler(make_plan(ups, {f"s{k}": WAIT for k in range(1000)}))
    sched.start(0.0)
    assert sched.sensing == 1000
    now = 0.0
    for tid in chain:
        started = sched.pop_ready(2, now)
        assert [t.task_id for t in started] == [tid]
        now += 1.0
        sched.record(tid, 1, True, now)
    assert sched.states()["c4"] is S.SUCCESS
    assert sched.sensing == 1000 and sched.state("end") is S.PENDING
    due = sched.pokes_due(now)
    assert len(due) == 1000
    for tid in due:
        sched.sensed(tid, True, now, "found")
    assert [t.task_id for t in sched.pop_ready(2, now)] == ["end"]
    sched.record("end", 1, True, now)
    assert sched.run_state() is RunState.SUCCESS


def test_cancel_stops_waiting_and_late_pokes_are_ignored() -> None:
    sched = Scheduler(make_plan({"wait": []}, {"wait": WAIT}))
    sched.start(0.0)
    sched.pokes_due(0.0)
    out = sched.cancel(1.0)
    assert [(t.old, t.new) for t in out] == [(S.SENSING, S.CANCELLED)]
    assert sched.sensing == 0 and sched.next_due() is None
    assert sched.sensed("wait", True, 2.0) == []
    assert sched.run_state() is RunState.CANCELLED


def test_fail_fast_timeout_cancels_the_rest() -> None:
    policy = SensorPolicy(poke_interval=5.0, timeout=5.0)
    sched = Scheduler(
        make_plan({"wait": [], "other": []}, {"wait": policy}), failure_strategy="fail_fast"
    )
    sched.start(0.0)
    sched.pokes_due(0.0)
    sched.sensed("wait", False, 0.0)
    sched.pop_ready(1, 0.0)  # other runs
    (tid,) = sched.pokes_due(5.0)
    out = sched.sensed(tid, False, 5.0)
    assert [(t.task_id, t.new) for t in out] == [("wait", S.FAILED), ("other", S.CANCELLED)]


def test_resumed_sensor_that_succeeded_is_not_waited_for_again() -> None:
    sched = Scheduler(make_plan({"wait": [], "load": ["wait"]}, {"wait": WAIT}), restored=["wait"])
    assert [(t.task_id, t.new) for t in sched.start(0.0)] == [("load", S.QUEUED)]
    assert sched.sensing == 0


@pytest.mark.parametrize(
    ("since", "deadline", "passed"),
    [
        pytest.param(80.0, 115.0, "20s", id="counts-from-the-first-wait"),
        pytest.param(60.0, 95.0, "40s", id="past-its-deadline-one-poke"),
        pytest.param(100.0, 135.0, None, id="since-now"),
        pytest.param(130.0, 135.0, None, id="a-future-start-is-now"),
    ],
)
def test_resumed_sensor_keeps_when_it_began_to_wait(
    since: float, deadline: float, passed: str | None
) -> None:
    """A sensor that was waiting when its run stopped: the resumed wait ends
    ``timeout`` after the first wait began (35 s here), not after the resume (at 100)."""
    sched = Scheduler(make_plan({"wait": []}, {"wait": WAIT}), sensing_since={"wait": since})
    (start,) = sched.start(100.0)
    assert (start.new, start.due_at) == (S.SENSING, deadline)
    message = start.message or ""
    if passed is None:
        assert "before the resume" not in message
    else:
        assert message.endswith(f"({passed} of it passed before the resume)")
    assert sched.pokes_due(100.0) == ["wait"]  # checked at once, as any start
    out = sched.sensed("wait", False, 100.0, "still nothing")
    if deadline <= 100.0:
        assert checked(out) == [("wait", S.FAILED)]
    else:
        assert out == [] and sched.next_due() == min(110.0, deadline)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        pytest.param(604800.0, "7d", id="days"),
        pytest.param(7200.0, "2h", id="hours"),
        pytest.param(1800.0, "30m", id="minutes"),
        pytest.param(90.0, "90s", id="not-whole-minutes"),
        pytest.param(0.5, "0.5s", id="fraction"),
    ],
)
def test_spans_are_shown_as_written(seconds: float, shown: str) -> None:
    assert span(seconds) == shown


def test_a_false_condition_skips_a_sensor_before_it_waits() -> None:
    plan = replace(
        make_plan({"wait": [], "load": ["wait"]}, {"wait": WAIT}), conditional=[True, False]
    )
    sched = Scheduler(plan, condition=lambda tid: False)
    out = sched.start(0.0)
    assert [(t.task_id, t.new) for t in out] == [("wait", S.SKIPPED), ("load", S.SKIPPED)]
    assert sched.sensing == 0 and sched.pokes_due(0.0) == []


def test_next_due_without_pokes_leaves_the_sensors_out() -> None:
    """A paused run asks ``next_due(pokes=False)``: it checks no sensor, so a poke due
    must not wake it (it would spin), while a retry still counts."""
    plan = make_plan({"wait": [], "flaky": []}, {"wait": WAIT})
    retry = RetryPolicy(max_retries=1, delay_seconds=30.0)
    sched = Scheduler(replace(plan, retries=[RetryPolicy(), retry]))
    sched.start(0.0)
    assert sched.next_due() == 0.0 and sched.next_due(pokes=False) is None
    (flaky,) = sched.pop_ready(1, 0.0)
    sched.record(flaky.task_id, flaky.attempt, False, 1.0, "boom")
    assert sched.next_due() == 0.0  # the poke
    assert sched.next_due(pokes=False) == pytest.approx(31.0)  # the retry
    assert sched.pokes_due(0.5) == ["wait"]  # once unpaused, the late poke goes out
