"""Commands: queue a run, run one here, resume or retry it, and control it.

Policy. Each command checks its arguments (``operations.arguments``) before it
touches the store, then does what the runtime's public entry points do:

* ``submit`` validates the pipeline and its parameters and records a ``queued``
  run with no lease (``Runner.prepare(hold=False)``): a worker claims it. Nothing
  is recorded when anything is wrong (``InvalidSpec`` with every problem).
* ``start`` / ``resume`` / ``retry`` execute in the calling process
  (``runtime.runner.run_pipeline`` / ``resume_run`` / ``retry_run``) and return
  the ``RunResult``; ``resume`` of a run that is paused while a live process runs
  it unpauses it instead (``ControlOutcome``).
* ``cancel`` / ``pause`` / ``unpause`` / ``approve`` / ``reject`` are requests
  through the store (``runtime.control``), which reach the process that owns the
  run wherever it is; each returns a ``ControlOutcome`` whose ``message`` says
  what was done. ``by`` is who asks, as the caller knows it (the API: its token's
  name; the CLI: the operating-system user running it); ``None`` is this process's
  operating-system user, by effective uid (``runtime.control.default_requester``).
  An approval gate's ``approvers`` are checked against it.

Every user mistake raises a ``StageflowError`` subclass; nothing prints.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from stageflow.errors import UsageError
from stageflow.operations.arguments import check_run_id, check_task_id
from stageflow.runtime.settings import Settings

if TYPE_CHECKING:
    from stageflow.operations.access import Confinement
    from stageflow.runtime.interrupt import Interrupt
    from stageflow.runtime.result import RunResult
    from stageflow.runtime.runner import Listener, OnStart
    from stageflow.runtime.store.base import PipelineRecord, Store, Tick
    from stageflow.spec.models import Pipeline

__all__ = [
    "MAX_COMMENT",
    "ControlOutcome",
    "SubmittedRun",
    "approve",
    "cancel",
    "pause",
    "reject",
    "requeue_retry",
    "resume",
    "retry",
    "start",
    "submit",
    "submit_saved",
    "unpause",
]

#: The longest comment an approval decision records.
MAX_COMMENT = 2000

Request = Literal["cancel", "pause", "unpause", "approve", "reject", "retry"]


@dataclass(frozen=True, slots=True)
class SubmittedRun:
    """A run recorded ``queued`` for a worker."""

    run_id: str
    pipeline: str
    pipeline_version: str
    state: str
    priority: int
    params: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "state": self.state,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    """What a control request did: ``message`` says it for a person."""

    run_id: str
    request: Request
    by: str
    message: str
    task_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "request": self.request,
            "by": self.by,
            "task_id": self.task_id,
            "message": self.message,
        }


def submit(
    settings: Settings,
    pipeline: Pipeline | str,
    params: Mapping[str, Any] | None = None,
    *,
    priority: int = 0,
) -> SubmittedRun:
    """Validate ``pipeline`` (a ``Pipeline``, or a file / ``module:name`` to load) and
    queue a run of it; nothing is recorded when it or a parameter is wrong.

    Raises ``InvalidSpec`` (every problem), ``UsageError`` (a target that cannot be
    loaded, a priority out of range), ``StoreError``."""
    from stageflow.operations.stores import writing
    from stageflow.runtime.loading import load_pipeline
    from stageflow.runtime.runner import Runner

    _check_priority(priority)
    if isinstance(pipeline, str):
        pipeline = load_pipeline(pipeline, settings.limits)
    with writing(settings) as store:
        prepared = Runner(pipeline, store=store, settings=settings).prepare(
            dict(params or {}), priority=priority, hold=False
        )
    run = prepared.run
    return SubmittedRun(
        run.run_id, run.pipeline, run.pipeline_version, run.state, run.priority, run.params
    )


def submit_saved(
    settings: Settings,
    store: Store,
    record: PipelineRecord,
    params: Mapping[str, Any] | None = None,
    *,
    priority: int = 0,
    triggered_by: str | None = None,
    tick: Tick | None = None,
    confine: Confinement | None = None,
) -> SubmittedRun:
    """Queue a run of a saved pipeline version (the API's submit, a schedule's tick):
    validated as ``submit`` does, without importing any ``call:`` target
    (``Runner(import_calls=False)``); the run belongs to the pipeline's owner. Raises
    ``InvalidSpec``, ``UsageError``, ``StoreError``, ``TickTaken`` (``tick``: the
    schedule and logical time firing it had made its run already). ``confine``: what a
    non-admin's run may reach (``access.confinement``): a file path its parameters put
    in a task outside its data roots, a host that is not public nor allowed, another
    team's pipeline read by a task sensor is ``Forbidden`` (``access.check_confined``),
    nothing queued."""
    from stageflow.runtime.runner import queue_saved

    _check_priority(priority)
    if confine is not None:
        _check_confined(store, record, params or {}, confine)
    run = queue_saved(
        settings,
        store,
        record,
        params or {},
        priority=priority,
        triggered_by=triggered_by,
        tick=tick,
    )
    return SubmittedRun(
        run.run_id, run.pipeline, run.pipeline_version, run.state, run.priority, run.params
    )


def _check_confined(
    store: Store, record: PipelineRecord, params: Mapping[str, Any], confine: Confinement
) -> None:
    """``access.check_confined`` for a run of the saved version ``record``."""
    import json

    from stageflow.operations.access import check_confined
    from stageflow.spec.load import pipeline_from_data

    check_confined(store, pipeline_from_data(json.loads(record.spec_json)), params, confine)


def _check_priority(priority: int) -> None:
    if not -1_000_000 <= priority <= 1_000_000:
        raise UsageError(f"priority {priority} is out of range -1000000..1000000", field="priority")


def start(
    settings: Settings,
    pipeline: Pipeline,
    params: Mapping[str, Any] | None = None,
    *,
    executor: str = "thread",
    max_parallel: int | None = None,
    use_cache: bool = True,
    listener: Listener | None = None,
    on_start: OnStart | None = None,
    interrupt: Interrupt | None = None,
) -> RunResult:
    """Validate, record and run ``pipeline`` in this process (``runtime.runner.run_pipeline``);
    its ``RunResult`` in any final state. Raises ``InvalidSpec`` before anything runs."""
    from stageflow.runtime.runner import run_pipeline

    return run_pipeline(
        pipeline,
        params=params,
        executor=executor,
        max_parallel=max_parallel,
        settings=settings,
        listener=listener,
        on_start=on_start,
        interrupt=interrupt,
        use_cache=use_cache,
    )


def resume(
    settings: Settings,
    run_id: str,
    *,
    by: str | None = None,
    executor: str = "thread",
    max_parallel: int | None = None,
    listener: Listener | None = None,
    on_start: OnStart | None = None,
    interrupt: Interrupt | None = None,
) -> RunResult | ControlOutcome:
    """Finish ``run_id`` in this process: re-run exactly its tasks without a committed
    success. A run paused while a live process still runs it is unpaused instead
    (the ``ControlOutcome`` of that). Raises ``UsageError``, ``RunNotFound``,
    ``RunOwned``, ``LeaseLost``, and what loading its pipeline raises."""
    from stageflow.operations.runs import paused_elsewhere
    from stageflow.operations.stores import reading
    from stageflow.runtime.runner import resume_run

    check_run_id(run_id)
    with reading(settings) as store:
        paused = paused_elsewhere(store, run_id, now=time.time())
    if paused:
        return unpause(settings, run_id, by=by)
    return resume_run(
        run_id,
        executor=executor,
        max_parallel=max_parallel,
        settings=settings,
        listener=listener,
        on_start=on_start,
        interrupt=interrupt,
    )


def retry(
    settings: Settings,
    run_id: str,
    *,
    from_task: str | None = None,
    by: str | None = None,
    executor: str = "thread",
    max_parallel: int | None = None,
    use_cache: bool = True,
    listener: Listener | None = None,
    on_start: OnStart | None = None,
    interrupt: Interrupt | None = None,
) -> RunResult:
    """Run the tasks of the ended ``run_id`` that did not succeed again, in this process
    (``runtime.runner.retry_run``); with ``from_task``, that task and its downstream
    too. Raises ``UsageError``, ``RunNotFound``, ``RunOwned``, ``ControlRefused``."""
    from stageflow.runtime.runner import retry_run

    check_run_id(run_id)
    if from_task is not None:
        check_task_id(from_task, "--from")
    return retry_run(
        run_id,
        from_task=from_task,
        by=by,
        executor=executor,
        max_parallel=max_parallel,
        settings=settings,
        listener=listener,
        on_start=on_start,
        interrupt=interrupt,
        use_cache=use_cache,
    )


def requeue_retry(
    store: Store,
    run_id: str,
    *,
    from_task: str | None = None,
    by: str,
    now: float,
    confine: Confinement | None = None,
) -> ControlOutcome:
    """``retry`` for a service: put the ended ``run_id`` back in the queue, its tasks that
    did not succeed (and, with ``from_task``, that task and everything downstream of it)
    reset to ``pending``, for a worker to resume; nothing runs in this process and no
    module is imported. Raises ``UsageError`` (a bad id, no such task), ``RunNotFound``,
    ``ControlRefused`` (it has not ended, it succeeded and no ``from_task`` was given, or
    it changed meanwhile), ``Forbidden`` (``confine``, as for ``submit_saved``: the run's
    parameters, given by whoever started it, reach beyond what the caller may)."""
    from stageflow.engine.states import FINAL_RUN_STATES
    from stageflow.errors import ControlRefused
    from stageflow.runtime.loading import pipeline_of_run
    from stageflow.runtime.runner import with_downstream
    from stageflow.runtime.store.base import EventRecord

    check_run_id(run_id)
    if from_task is not None:
        check_task_id(from_task, "from_task")
    run = store.get_run(run_id)
    if run.state not in FINAL_RUN_STATES:
        raise ControlRefused(
            f"run '{run_id}' is {run.state}; retry is for a run that has ended "
            "(cancel it first, or wait for it)"
        )
    if run.state == "success" and from_task is None:
        raise ControlRefused(
            f"run '{run_id}' succeeded; nothing to retry (give from_task to run a task and "
            "everything downstream of it again)"
        )
    if confine is not None:
        from stageflow.operations.access import check_confined

        check_confined(store, pipeline_of_run(store, run), run.params, confine)
    rerun: set[str] = set()
    if from_task is not None:
        rerun = with_downstream(pipeline_of_run(store, run), from_task, run_id)
    reason = "retry" + (f" --from {from_task}" if from_task else "") + f" by {by}"
    reset = [t for t in store.task_runs(run_id) if t.state != "success" or t.task_id in rerun]
    events = [EventRecord(run_id, None, run.state, "running", now, 0, f"queued again: {reason}")]
    events += [
        EventRecord(run_id, t.task_id, t.state, "pending", now, t.attempts, f"reset by {reason}")
        for t in reset
        if t.state != "pending"
    ]
    if not store.requeue_run(run_id, run.state, [t.task_id for t in reset], events, now):
        raise ControlRefused(f"run '{run_id}' changed meanwhile; look at it again")
    return ControlOutcome(
        run_id,
        "retry",
        by,
        f"run '{run_id}' is queued again: {len(reset)} task(s) will run; a worker resumes it",
        task_id=from_task,
    )


def cancel(settings: Settings, run_id: str, *, by: str | None = None) -> ControlOutcome:
    """Cancel ``run_id``: its owner stops running attempts and cancels every unfinished
    task; a run no live process runs is cancelled in the store at once. Raises
    ``UsageError``, ``RunNotFound``, ``ControlRefused`` (it ended)."""
    from stageflow.runtime.control import cancel_run, requester

    check_run_id(run_id)
    message = cancel_run(run_id, by=by, settings=settings)
    return ControlOutcome(run_id, "cancel", requester(by), message)


def pause(settings: Settings, run_id: str, *, by: str | None = None) -> ControlOutcome:
    """Ask the owner of ``run_id`` to start no new task. Raises ``UsageError``,
    ``RunNotFound``, ``ControlRefused`` (it ended, or no live process runs it)."""
    from stageflow.runtime.control import pause_run, requester

    check_run_id(run_id)
    message = pause_run(run_id, by=by, settings=settings)
    return ControlOutcome(run_id, "pause", requester(by), message)


def unpause(settings: Settings, run_id: str, *, by: str | None = None) -> ControlOutcome:
    """Ask the owner of the paused ``run_id`` to start tasks again. Raises ``UsageError``,
    ``RunNotFound``, ``ControlRefused`` (not paused, ended, or no live process runs it)."""
    from stageflow.runtime.control import requester, unpause_run

    check_run_id(run_id)
    message = unpause_run(run_id, by=by, settings=settings)
    return ControlOutcome(run_id, "unpause", requester(by), message)


def approve(
    settings: Settings,
    run_id: str,
    task_id: str,
    *,
    comment: str | None = None,
    by: str | None = None,
) -> ControlOutcome:
    """Approve the gate of ``task_id`` (awaiting approval): it runs. Raises
    ``UsageError`` (bad id, no such task, comment too long), ``RunNotFound``,
    ``ControlRefused`` (no gate, not awaiting, ``by`` not an approver, no owner)."""
    return _decide(settings, run_id, task_id, True, comment, by)


def reject(
    settings: Settings,
    run_id: str,
    task_id: str,
    *,
    comment: str | None = None,
    by: str | None = None,
) -> ControlOutcome:
    """Reject the gate of ``task_id``: it fails (its downstream follow their trigger
    rules). Raises as ``approve``."""
    return _decide(settings, run_id, task_id, False, comment, by)


def _decide(
    settings: Settings,
    run_id: str,
    task_id: str,
    approved: bool,
    comment: str | None,
    by: str | None,
) -> ControlOutcome:
    from stageflow.runtime.control import decide_approval, requester

    check_run_id(run_id)
    check_task_id(task_id, "TASK")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise UsageError(f"--comment is over {MAX_COMMENT} characters; shorten it", field="comment")
    message = decide_approval(
        run_id, task_id, approve=approved, comment=comment, by=by, settings=settings
    )
    return ControlOutcome(
        run_id, "approve" if approved else "reject", requester(by), message, task_id
    )
