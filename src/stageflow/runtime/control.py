"""Run control from another thread or process: cancel, pause, unpause, approve.

Policy. A request is a row in the store's ``control_requests`` table (what,
which task, who, when, a comment), so it works from any process or host that
can reach the store. The process running the run polls for new rows every
``POLL_SECONDS`` in its loop (one indexed ``SELECT``) and acts on them through
``RunControl``:

- ``cancel``: every task that is not final ends ``cancelled`` (running attempts
  are stopped) and the run ends ``cancelled``;
- ``pause``: no new task starts, running ones finish; the run is ``paused``;
- ``unpause``: tasks start again; the run is ``running``;
- ``approve`` / ``reject`` TASK: decides the approval gate of a task in
  ``awaiting_approval`` (``engine.scheduler``).

Every accepted request is recorded as an event naming who asked and when. The
request functions (``cancel_run`` ...) first check what they can and raise a
``StageflowError`` saying why not: ``RunNotFound``; ``ControlRefused`` when the
run has ended, no live process runs it, the task does not await approval, or
the caller is not one of the task's ``approvers``. Who asks is ``by``, vouched
for by the caller: the API passes its token's name; the CLI without a server
passes this process's operating-system user, which is also the default
(``default_requester``: by effective uid, never ``$USER`` or ``$LOGNAME``, which
anyone can set). A run
whose process died cannot act on requests: ``cancel_run`` then claims it (a
compare-and-set of its lease, like ``resume``) and cancels it in the store
itself; the others point to ``stageflow resume``.

Who runs a run is its lease's owner (``runtime.claim.live_owner``).

State. ``RunControl`` keeps the id of the last request it read: a new run
starts at 0, a resumed or retried one at the newest id, so requests made to an
earlier process of the run are history, not orders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from stageflow.engine.lease import silence
from stageflow.engine.scheduler import Scheduler, Transition
from stageflow.engine.states import FINAL_RUN_STATES, FINAL_TASK_STATES, RunState, TaskState
from stageflow.errors import ControlRefused, RunOwned, UsageError
from stageflow.runtime.claim import Owner, holder_of, lease_terms, live_owner, take_run
from stageflow.runtime.result import iso
from stageflow.runtime.settings import Settings, load_settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import (
    AttemptRecord,
    Batch,
    ControlRequest,
    EventRecord,
    Fence,
    RunRecord,
    RunUpdate,
    Store,
)

if TYPE_CHECKING:
    from stageflow.spec.models import Approval

__all__ = [
    "POLL_SECONDS",
    "Owner",
    "RunControl",
    "cancel_run",
    "decide_approval",
    "default_requester",
    "live_owner",
    "pause_run",
    "requester",
    "unpause_run",
]

logger = logging.getLogger(__name__)

#: How often a running run reads new control requests (bench/overhead.py: no
#: measurable cost on W1; a cancel or approval takes effect within this time).
POLL_SECONDS = 0.25

Record = Callable[[list[Transition], Batch], None]


def default_requester() -> str:
    """Who is asking, by default: the operating-system user of this process, by its
    effective uid (the uid as text when the passwd database has no entry for it).
    Not ``getpass.getuser()``: that believes ``$LOGNAME``/``$USER``, which anyone sets."""
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry for this uid (e.g. some containers)
        return str(uid)


# -- requests (any process) ----------------------------------------------------------


def cancel_run(
    run_id: str,
    *,
    by: str | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Ask the process running ``run_id`` to cancel it; return what was done.

    A run that no live process runs (it crashed) is cancelled in the store at once.
    Raises ``RunNotFound``, or ``ControlRefused`` when the run has ended.
    """
    by = requester(by)
    settings = settings or load_settings()
    with _opened(settings, home, store_url) as store:
        run = _unfinished(store, run_id, "cancel")
        now = time.time()
        # Stored even when no process runs the run: one that is just starting takes
        # it over from the store and acts on it first thing.
        store.add_request(ControlRequest(run_id, "cancel", now, by))
        owner = live_owner(run, now)
        if owner is None:
            # Claimed first (compare-and-set, as resume does): of this cancel and a
            # resume starting now, exactly one takes the run.
            try:
                epoch = take_run(store, run, now=now, terms=lease_terms(settings))
            except RunOwned as exc:
                raise ControlRefused(
                    f"run '{run_id}' was just taken over by {exc.owner}; "
                    f"`stageflow cancel {run_id}` again asks it to cancel"
                ) from None
            message = f"cancelled by {by} (no live process ran the run)"
            _cancel_in_store(store, run, message, now, epoch)
            return f"run '{run_id}' was not running in any live process; cancelled it in the store"
        return (
            f"asked {owner.describe()} to cancel run '{run_id}': running attempts are "
            "stopped and every unfinished task ends cancelled"
        )


def pause_run(
    run_id: str,
    *,
    by: str | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Ask the process running ``run_id`` to start no new task (running ones finish).

    Raises ``RunNotFound``, or ``ControlRefused`` when the run has ended or no live
    process runs it.
    """
    by = requester(by)
    with _opened(settings, home, store_url) as store:
        run = _unfinished(store, run_id, "pause")
        if run.state == RunState.PAUSED:
            return f"run '{run_id}' is already paused; `stageflow unpause {run_id}` continues it"
        owner = _owner_or_refuse(run, "pause")
        store.add_request(ControlRequest(run_id, "pause", time.time(), by))
        return (
            f"asked {owner.describe()} to pause run '{run_id}': running tasks finish, "
            f"no new task starts until `stageflow unpause {run_id}`"
        )


def unpause_run(
    run_id: str,
    *,
    by: str | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Ask the process running the paused run ``run_id`` to start tasks again.

    Raises ``RunNotFound``, or ``ControlRefused`` when the run has ended, is not
    paused, or no live process runs it.
    """
    by = requester(by)
    with _opened(settings, home, store_url) as store:
        run = _unfinished(store, run_id, "unpause")
        if run.state != RunState.PAUSED:
            raise ControlRefused(
                f"run '{run_id}' is {run.state}, not paused; nothing to unpause "
                f"(`stageflow pause {run_id}` pauses it)"
            )
        owner = _owner_or_refuse(run, "unpause")
        store.add_request(ControlRequest(run_id, "unpause", time.time(), by))
        return f"asked {owner.describe()} to continue run '{run_id}'"


def decide_approval(
    run_id: str,
    task_id: str,
    *,
    approve: bool = True,
    comment: str | None = None,
    by: str | None = None,
    home: str | os.PathLike[str] | None = None,
    store_url: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Approve (or reject) the approval gate of ``task_id``, which awaits approval.

    Approved, the task runs; rejected, it fails (its downstream follow their
    trigger rules). Raises ``RunNotFound``; ``UsageError`` for a task the run does
    not have; ``ControlRefused`` when the run has ended, no live process runs it,
    the task has no gate or does not await approval, or ``by`` is not an approver.
    """
    by = requester(by)
    verb = "approve" if approve else "reject"
    with _opened(settings, home, store_url) as store:
        run = _unfinished(store, run_id, verb)
        rows = {r.task_id: r for r in store.task_runs(run_id)}
        if task_id not in rows:
            from stageflow.spec.suggest import did_you_mean

            hint = did_you_mean(task_id, sorted(rows))
            raise UsageError(
                f"run '{run_id}' has no task '{task_id}'"
                + (f"; did you mean '{hint}'?" if hint else ""),
                task=task_id,
            )
        gate = _gate_of(store, run, task_id)
        if gate is None:
            raise ControlRefused(
                f"task '{task_id}' of run '{run_id}' has no approval gate; only tasks with "
                "`approval:` wait for a decision",
                task=task_id,
            )
        approvers = gate.approvers
        if approvers and by not in approvers:
            raise ControlRefused(
                f"'{by}' may not decide the approval of task '{task_id}' in run '{run_id}'; "
                f"its approvers are: {', '.join(approvers)}; ask one of them to decide it "
                "(as their operating-system user, or with their token through a server)",
                task=task_id,
            )
        state = rows[task_id].state
        if state != TaskState.AWAITING_APPROVAL:
            raise ControlRefused(
                f"task '{task_id}' of run '{run_id}' is {state}, not awaiting approval; "
                "a gate can be decided once the task waits for it (see `stageflow runs show`)",
                task=task_id,
            )
        owner = _owner_or_refuse(run, verb)
        request: Literal["approve", "reject"] = "approve" if approve else "reject"
        store.add_request(ControlRequest(run_id, request, time.time(), by, task_id, comment))
        outcome = "runs" if approve else "fails"
        return (
            f"{'approved' if approve else 'rejected'} task '{task_id}' of run '{run_id}' "
            f"as {by}; {owner.describe()} records it and the task {outcome}"
        )


# -- the run loop's side --------------------------------------------------------------


class RunControl:
    """The run loop's end of run control: reads new requests and applies them.

    ``paused``: no task may start; ``cancelled``: a cancel request ended the run;
    ``state``: the run's state as this process last recorded it (running/paused);
    ``message``: who cancelled, for the run's final event.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        approvers: Mapping[str, list[str] | None],
        now: float,
        *,
        after: int = 0,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._approvers = approvers  # task id -> approvers (None: anyone)
        self._after = after
        self.next_poll = now  # the first poll happens at once
        self.paused = False
        self.cancelled = False
        self.state = RunState.RUNNING
        self.message: str | None = None

    @classmethod
    def for_run(
        cls, store: Store, run_id: str, approvers: Mapping[str, list[str] | None], now: float
    ) -> RunControl:
        """Start after the run's newest request: earlier ones were for an earlier process."""
        after = max((r.request_id for r in store.requests(run_id)), default=0)
        return cls(store, run_id, approvers, now, after=after)

    def poll(self, sched: Scheduler, now: float, batch: Batch, record: Record) -> None:
        """Read the requests made since the last poll and act on each, in order."""
        self.next_poll = now + POLL_SECONDS
        from stageflow.errors import StoreUnreachable  # (a lost connection: runtime.committer)

        try:
            requests = self._store.requests(self._run_id, self._after)
        except StoreUnreachable as exc:  # read again at the next poll; the run goes on
            logger.debug("run %s: control requests not read: %s", self._run_id, exc)
            return
        for request in requests:
            self._after = request.request_id
            self.apply(request, sched, now, batch, record)

    def apply(
        self, request: ControlRequest, sched: Scheduler, now: float, batch: Batch, record: Record
    ) -> None:
        """Act on one request: engine transitions through ``record``, run changes in ``batch``."""
        by, kind = request.requested_by, request.request
        when = iso(request.requested_at)
        if kind == "cancel":
            if sched.finished or self.cancelled:
                return
            self.cancelled = True
            self.message = f"cancelled by {by} (requested at {when})"
            logger.warning("run %s: %s", self._run_id, self.message)
            record(sched.cancel(now, self.message), batch)
        elif kind in ("pause", "unpause"):
            new = RunState.PAUSED if kind == "pause" else RunState.RUNNING
            if self.state is new or self.cancelled:
                return
            message = f"{kind}d by {by} (requested at {when})"
            logger.warning("run %s: %s", self._run_id, message)
            batch.runs.append(RunUpdate(self._run_id, state=new))
            batch.events.append(EventRecord(self._run_id, None, self.state, new, now, 0, message))
            self.state, self.paused = new, kind == "pause"
        else:
            self._decide(request, sched, now, batch, record)

    def _decide(
        self, request: ControlRequest, sched: Scheduler, now: float, batch: Batch, record: Record
    ) -> None:
        tid, by = request.task_id or "", request.requested_by
        approvers = self._approvers.get(tid)
        if tid not in self._approvers or sched.state(tid) is not TaskState.AWAITING_APPROVAL:
            logger.warning(
                "run %s: %s of task %s by %s ignored: the task does not await approval",
                self._run_id,
                request.request,
                tid,
                by,
            )
            return
        if approvers and by not in approvers:
            logger.warning(
                "run %s: %s of task %s by %s ignored: not one of its approvers (%s)",
                self._run_id,
                request.request,
                tid,
                by,
                ", ".join(approvers),
            )
            return
        approved = request.request == "approve"
        message = (
            f"{'approved' if approved else 'rejected'} by {by} at {iso(request.requested_at)}"
            + (f": {request.comment}" if request.comment else "")
        )
        logger.warning("run %s task %s: %s", self._run_id, tid, message)
        record(sched.decide_approval(tid, approved, now, message), batch)


# -- helpers ----------------------------------------------------------------------------


def requester(by: str | None) -> str:
    """Who asks: ``by`` checked (``UsageError``), or this process's user."""
    if by is None:
        return default_requester()
    name = by.strip()
    if not name or len(name) > 200 or any(c in name for c in "\r\n\t"):
        raise UsageError(f"--by {by!r}: give a name of 1 to 200 characters on one line", field="by")
    return name


@contextlib.contextmanager
def _opened(
    settings: Settings | None, home: str | os.PathLike[str] | None, store_url: str | None
) -> Iterator[Store]:
    from dataclasses import replace as with_fields

    settings = settings or load_settings()
    if home is not None:
        settings = with_fields(settings, home=Path(home))
    if store_url is not None:
        settings = with_fields(settings, database_url=store_url)
    store = open_store(settings.database_url, settings.home)
    try:
        yield store
    finally:
        store.close()


def _unfinished(store: Store, run_id: str, verb: str) -> RunRecord:
    run = store.get_run(run_id)
    if run.state in FINAL_RUN_STATES:
        hint = (
            f"; `stageflow retry {run_id}` runs its failed tasks again"
            if run.state != RunState.SUCCESS
            else ""
        )
        raise ControlRefused(f"run '{run_id}' already ended ({run.state}); nothing to {verb}{hint}")
    return run


def _owner_or_refuse(run: RunRecord, verb: str) -> Owner:
    now = time.time()
    owner = live_owner(run, now)
    if owner is None:
        silent = silence(holder_of(run), now)
        why = f"its owner {silent}" if silent else "it may have crashed"
        raise ControlRefused(
            f"cannot {verb} run '{run.run_id}': no live process runs it ({why}); "
            f"`stageflow resume {run.run_id}` finishes it, `stageflow cancel {run.run_id}` ends it"
        )
    return owner


def _gate_of(store: Store, run: RunRecord, task_id: str) -> Approval | None:
    """The ``approval:`` of ``task_id`` in the pipeline version the run uses; raises
    as ``runtime.loading.pipeline_of_run`` does."""
    from stageflow.runtime.loading import pipeline_of_run

    for task in pipeline_of_run(store, run).tasks:
        if task.id == task_id:
            return task.approval
    return None


def _cancel_in_store(store: Store, run: RunRecord, message: str, now: float, epoch: int) -> None:
    """Cancel a run nobody runs (this process claimed it: lease ``epoch``): its
    unfinished tasks and attempts, then the run; its lease is cleared."""
    batch = Batch(fences={run.run_id: Fence(epoch, now, None)})
    for row in store.task_runs(run.run_id):
        if row.state in FINAL_TASK_STATES:
            continue
        batch.task_runs.append(row._replace(state=TaskState.CANCELLED, ended_at=now, error=message))
        batch.events.append(
            EventRecord(
                run.run_id, row.task_id, row.state, TaskState.CANCELLED, now, row.attempts, message
            )
        )
    for attempt in store.attempts(run.run_id):
        if attempt.state not in FINAL_TASK_STATES:
            batch.attempts.append(
                AttemptRecord(
                    attempt.run_id,
                    attempt.task_id,
                    attempt.attempt,
                    TaskState.CANCELLED,
                    attempt.started_at,
                    now,
                    message,
                )
            )
    batch.runs.append(RunUpdate(run.run_id, state=RunState.CANCELLED, ended_at=now))
    batch.events.append(
        EventRecord(run.run_id, None, run.state, RunState.CANCELLED, now, 0, message)
    )
    store.commit(batch)
