"""Run events reach subscribers off the runs' locks (``runtime.observers``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stageflow import Pipeline, Task
from stageflow.engine.scheduler import Transition
from stageflow.engine.states import TaskState
from stageflow.runtime.host import Host
from stageflow.runtime.observers import Observers, RunEvent
from stageflow.runtime.runner import run_pipeline
from stageflow.runtime.settings import load_settings

WAIT = 10.0


def one() -> int:
    return 1


def plus_one(a: int) -> int:
    return a + 1


def task_event(run_id: str, n: int) -> RunEvent:
    t = Transition(f"t{n}", TaskState.PENDING, TaskState.QUEUED, 0, 0.0)
    return RunEvent("task", run_id, transition=t)


def test_events_reach_subscribers_in_order_filtered_by_run() -> None:
    observers = Observers()
    everything: list[str] = []
    only_a: list[str] = []
    observers.subscribe(lambda e: everything.append(f"{e.run_id}:{e.transition.task_id}"))  # type: ignore[union-attr]
    observers.subscribe(
        lambda e: only_a.append(e.transition.task_id),  # type: ignore[union-attr]
        run_id="a",
    )
    for n in range(50):
        observers.publish(task_event("a" if n % 2 == 0 else "b", n))

    assert observers.drain("a", WAIT) and observers.drain("b", WAIT)
    assert everything == [f"{'a' if n % 2 == 0 else 'b'}:t{n}" for n in range(50)]
    assert only_a == [f"t{n}" for n in range(0, 50, 2)]
    observers.close()


def test_a_slow_subscriber_never_blocks_the_publisher_and_task_events_are_dropped_when_full() -> (
    None
):
    observers = Observers(size=5)
    gate = threading.Event()
    seen: list[str] = []

    def slow(event: RunEvent) -> None:
        gate.wait(WAIT)
        seen.append(event.kind)

    observers.subscribe(slow)
    for n in range(20):  # the subscriber holds the first; 5 fit; the rest are dropped
        observers.publish(task_event("r", n))
    assert 10 <= observers.dropped <= 15  # publishing returned at once: it never waited
    gate.set()
    observers.publish(RunEvent("finished", "r"))  # a run's end waits for room instead

    assert observers.drain("r", WAIT)
    assert seen[-1] == "finished"
    assert len(seen) == 20 - observers.dropped + 1
    observers.close()


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    observers = Observers()
    seen: list[int] = []

    def broken(event: RunEvent) -> None:
        raise ValueError("a bug in a subscriber")

    observers.subscribe(broken)
    observers.subscribe(lambda e: seen.append(1))
    observers.publish(RunEvent("started", "r"))
    observers.publish(RunEvent("finished", "r"))

    assert observers.drain("r", WAIT)
    assert seen == [1, 1]
    observers.close()


def test_without_subscribers_nothing_is_queued() -> None:
    observers = Observers(size=1)
    for n in range(10):
        observers.publish(task_event("r", n))
    assert observers.dropped == 0
    assert observers.drain("r", 0.0)  # nothing to wait for


def test_a_run_publishes_its_start_every_transition_and_its_end(tmp_path: Path) -> None:
    host = Host()
    events: list[RunEvent] = []
    host.observers.subscribe(events.append)
    pipeline = Pipeline("obs", tasks=[Task("a", one), Task("b", plus_one, upstream=["a"])])
    settings = load_settings({"STAGEFLOW_HOME": str(tmp_path)})
    transitions: list[Transition] = []

    result = run_pipeline(pipeline, settings=settings, listener=transitions.append, host=host)

    assert result.state == "success"
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert events[-1].result is not None and events[-1].result.run_id == result.run_id
    task_events = [e.transition for e in events if e.kind == "task"]
    assert [(t.task_id, t.new) for t in task_events if t is not None] == [
        (t.task_id, t.new) for t in transitions
    ]  # the run's listener is one more subscriber, fed the same events
    assert ("b", TaskState.SUCCESS) in [(t.task_id, t.new) for t in transitions]
    host.close()


def test_task_events_are_not_queued_when_no_subscriber_wants_them() -> None:
    observers = Observers(size=1)
    ends: list[str] = []
    observers.subscribe(lambda e: ends.append(e.kind), tasks=False)
    assert not observers  # the run loop asks this before it builds a task event
    for n in range(10):
        observers.publish(task_event("r", n))  # would overflow a queue of 1 if queued
    observers.publish(RunEvent("finished", "r"))

    assert observers.drain("r", WAIT)
    assert ends == ["finished"] and observers.dropped == 0
    watcher: list[str] = []
    unsubscribe = observers.subscribe(lambda e: watcher.append(e.kind), run_id="s")
    assert observers
    observers.publish(task_event("s", 0))
    assert observers.drain("s", WAIT)
    assert watcher == ["task"] and ends == ["finished"]  # each gets what it asked for
    unsubscribe()
    assert not observers
    observers.close()


def test_a_run_that_fails_before_its_end_leaves_no_subscription(tmp_path: Path) -> None:
    host = Host()
    pipeline = Pipeline("obs", tasks=[Task("a", one)])
    settings = load_settings({"STAGEFLOW_HOME": str(tmp_path)})

    def refuse(info: object) -> None:
        raise RuntimeError("the view could not start")

    with pytest.raises(RuntimeError, match="the view could not start"):
        run_pipeline(pipeline, settings=settings, on_start=refuse, host=host)

    assert host.observers.subscriptions == 0
    host.close()


class HastyObservers(Observers):
    """Gives up draining after 0.2 s (a run's entry point waits 30 s)."""

    def drain(self, run_id: str, timeout: float = 30.0) -> bool:
        return super().drain(run_id, 0.2)


def test_a_record_whose_end_is_still_queued_after_the_drain_is_written_late_not_lost(
    tmp_path: Path,
) -> None:
    from stageflow.runtime.lineage import load_record
    from stageflow.runtime.store import open_store

    host = Host()
    host.observers = HastyObservers()
    gate = threading.Event()

    def stuck(event: RunEvent) -> None:  # holds the dispatcher on the run's first event
        if event.kind == "started":
            gate.wait(WAIT)

    host.observers.subscribe(stuck, tasks=False)
    pipeline = Pipeline("obs", tasks=[Task("a", one)])
    settings = load_settings({"STAGEFLOW_HOME": str(tmp_path)})

    result = run_pipeline(pipeline, settings=settings, host=host)  # back after 0.2 s
    gate.set()

    def record_state() -> object:
        store = open_store(None, tmp_path)
        try:
            record = load_record(store, result.run_id)
        finally:
            store.close()
        return None if record is None else record.get("state")

    deadline = time.monotonic() + WAIT
    while record_state() != "success" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record_state() == "success"
    assert host.observers.subscriptions == 1  # only `stuck`: the run's ended itself
    host.close()
