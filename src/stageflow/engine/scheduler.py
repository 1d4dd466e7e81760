"""The run state machine: given the DAG and outcomes, decide what happens next.

Policy. Every task starts ``pending``. A task is decided as soon as its
trigger rule can be (``trigger_rules.decide``): it becomes ``queued`` (ready),
``skipped`` or ``upstream_failed``; final states propagate to downstream at once.
``pop_ready`` hands out queued tasks (highest ``priority`` first, then the
highest upward rank — the critical path first — then the order they became
ready) and marks them ``running`` with their attempt number. With an
``Admission`` a task starts only when its resource request is granted (bounded
backfilling around the best task that does not fit); its grant is released on
every outcome: success, failure, timeout, cancellation.
A failed attempt with retries left becomes ``up_for_retry`` with a due time
(``retry.retry_delay``); ``due(now)`` re-queues the ones whose time has come.
With ``failure_strategy="fail_fast"`` the first ``failed`` task cancels every
task that is not final; so does a fatal failure (``fatal_on``) whatever the
strategy, and ``abort`` (``run_timeout_seconds``), which makes the run
``failed``. The run is ``failed`` when any task ended ``failed`` or
``upstream_failed``, ``cancelled`` when it was cancelled, else ``success``.

Approval gates. A task with ``approval:`` whose trigger rule is met waits in
``awaiting_approval`` (holding no worker slot) until ``decide_approval``:
approved, it queues; rejected, or timed out (``due(now)``, like retries), it
fails and its downstream follow their trigger rules.

Sensors. A sensor task (``EnginePlan.sensors``) whose trigger rule is met waits
in ``sensing`` (holding no worker slot or resources): ``pokes_due(now)`` hands
out the checks that are due, ``sensed`` records each one's result; met, it
succeeds; unmet past its timeout, it fails (``skipped`` with ``soft_fail``);
otherwise its next check is due ``poke_interval`` later (``engine.sensors``).

Skipping downstream. A branch task's success skips the direct downstream it did
not choose; any task's success may skip all its direct downstream
(``record(..., skip_downstream=why)``: a data check whose ``on_violation`` is
``skip_downstream``). Either way the skipped tasks' own downstream follow their
trigger rules. On resume, a restored task makes the same decision again
(``branch``, ``skipped_downstream``), so a resumed run never runs what the first
process skipped.

State. Tasks are kept by integer index: ``_state`` (TaskState), ``_attempt``
(attempts started), four upstream-outcome counters per task (so each
completion costs O(out-degree), never a rescan), a heap of queued tasks and a
heap of retry due times. Nothing here reads a clock or does I/O: time is
handed in as ``now`` and decisions are returned as ``Transition`` data for the
runner to act on and record.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from stageflow.engine.admission import Admission, Grant, Request
from stageflow.engine.retry import retry_delay, should_retry
from stageflow.engine.sensors import SensorPolicy, SensorWaits, span
from stageflow.engine.states import FINAL_TASK_STATES, RunState, TaskState, check_task
from stageflow.engine.trigger_rules import UpstreamCounts, Verdict, decide
from stageflow.spec.models import Approval, Pipeline, Resources, RetryPolicy, TriggerRule

__all__ = ["EnginePlan", "Scheduler", "Transition", "to_request"]

_S = TaskState
_ALL_SUCCESS = TriggerRule.ALL_SUCCESS


class Transition(NamedTuple):
    """One task's move from ``old`` to ``new`` at time ``at`` (a named tuple: the
    engine makes a few per task, and a tuple is the cheapest immutable record)."""

    task_id: str
    old: TaskState
    new: TaskState
    attempt: int
    at: float
    message: str | None = None
    due_at: float | None = None


@dataclass(frozen=True, slots=True)
class EnginePlan:
    """What the engine needs of a pipeline, by task index."""

    ids: list[str]
    upstream: list[list[int]]
    rules: list[TriggerRule]
    retries: list[RetryPolicy]
    priorities: list[int]
    conditional: list[bool] = field(default_factory=list)  # has a ``when:``
    branching: list[bool] = field(default_factory=list)  # ``branch: true``
    approvals: list[Approval | None] = field(default_factory=list)  # ``approval:`` gates
    mapped: list[float | None] = field(default_factory=list)  # map_over: min success ratio
    sensors: list[SensorPolicy | None] = field(default_factory=list)  # sensor tasks
    # Resources: the distinct requests, and each task's index into them (empty
    # when no task asks for anything: no admission is needed).
    requests: list[Request] = field(default_factory=list)
    request_of: list[int] = field(default_factory=list)
    exclusive: list[bool] = field(default_factory=list)  # execution_mode hybrid
    estimates: list[float] = field(default_factory=list)  # seconds, for upward ranks
    order: list[int] = field(default_factory=list)  # a topological order, when known

    @classmethod
    def from_pipeline(
        cls,
        pipeline: Pipeline,
        operator_defaults: Mapping[str, Resources] | None = None,
    ) -> EnginePlan:
        """Index a pipeline whose upstream ids all exist (cycles are not checked here).

        ``operator_defaults``: the request of a task that declares none, by
        operator name (configured; seed 001's ``DEFAULT_TASK_RESOURCES``)."""
        tasks = pipeline.tasks
        index = {t.id: i for i, t in enumerate(tasks)}
        defaults = pipeline.defaults
        rule = defaults.trigger_rule or TriggerRule.ALL_SUCCESS
        retry = defaults.retry or RetryPolicy()
        priority = defaults.priority or 0
        requests, request_of = _requests(pipeline, operator_defaults or {})
        hybrid = pipeline.execution_mode == "hybrid"
        return cls(
            ids=list(index),
            upstream=[
                [index[u] for u in (t.all_upstream if t.after else t.upstream)] for t in tasks
            ],
            rules=[t.trigger_rule or rule for t in tasks],
            retries=[t.retry or retry for t in tasks],
            priorities=[priority if t.priority is None else t.priority for t in tasks],
            conditional=[t.when is not None for t in tasks],
            branching=[t.branch for t in tasks],
            approvals=[t.approval for t in tasks],
            mapped=[
                (1.0 if t.min_success_ratio is None else t.min_success_ratio)
                if t.map_over is not None
                else None
                for t in tasks
            ],
            requests=requests,
            request_of=request_of,
            exclusive=[hybrid and t.exclusive for t in tasks] if hybrid else [],
            estimates=[t.estimated_seconds or 1.0 for t in tasks]
            if any(t.estimated_seconds for t in tasks)
            else [],
        )

    def request(self, i: int) -> Request | None:
        """Task ``i``'s request, or ``None`` when it asks for nothing."""
        return self.requests[self.request_of[i]] if self.request_of else None

    def needs_admission(self) -> bool:
        """Whether any task asks for resources, a pool, or to run alone."""
        return bool(self.requests) or any(self.exclusive)

    def acyclic(self) -> bool:
        """True when the DAG has no cycle (Kahn's count: O(V + E), no recursion)."""
        return self.topological_order() is not None

    def topological_order(self) -> list[int] | None:
        """Task indexes, each after all its upstream (Kahn's algorithm); ``None``
        when there is a cycle. Keep it as ``order`` (``replace(plan, order=...)``)
        and the ``Scheduler`` need not sort the DAG again."""
        n = len(self.ids)
        waiting = [len(ups) for ups in self.upstream]
        downstream: list[list[int]] = [[] for _ in range(n)]
        for i, ups in enumerate(self.upstream):
            for u in ups:
                downstream[u].append(i)
        order = _kahn(waiting, downstream)
        return order if len(order) == n else None


class Scheduler:
    """Decides task states for one run; see the module docstring for the policy."""

    def __init__(
        self,
        plan: EnginePlan,
        *,
        failure_strategy: str = "continue",
        restored: Iterable[str] = (),
        attempts: Mapping[str, int] | None = None,
        condition: Callable[[str], bool | str] | None = None,
        branch: Callable[[str], Iterable[str] | str] | None = None,
        jitter_seed: str = "",
        map_size: Callable[[str], int | str] | None = None,
        admission: Admission | None = None,
        skipped_downstream: Callable[[str], str | None] | None = None,
        sensing_since: Mapping[str, float] | None = None,
    ) -> None:
        """``restored``: ids whose ``success`` is already committed (resume);
        ``attempts``: attempts already made per task (resume), so numbers go on;
        ``jitter_seed``: mixed into retry jitter (the runner passes the run id);
        ``admission``: the resource budget tasks are admitted against (shared by
        the runs of one runtime); ``None``: only the caller's worker limit;
        ``skipped_downstream``: why a restored task skipped its direct downstream
        when it succeeded (``None``: it did not), asked at ``start``;
        ``sensing_since``: when each sensor that was waiting as the run stopped began
        to wait (resume): its ``timeout`` counts from then, not from the resume (as
        Airflow's reschedule-mode sensors count from their first try)."""
        n = len(plan.ids)
        # Mapped tasks add children at run time: the per-task lists grow, so the
        # plan's lists are copied, never the caller's mutated.
        self._plan = replace(
            plan,
            ids=list(plan.ids),
            upstream=list(plan.upstream),
            rules=list(plan.rules),
            retries=list(plan.retries),
            priorities=list(plan.priorities),
        )
        self._fail_fast = failure_strategy == "fail_fast"
        self._index = {tid: i for i, tid in enumerate(plan.ids)}
        self._state = [_S.PENDING] * n
        self._attempt = [0] * n
        self._prior_attempts = dict(attempts or {})  # children's too (resume)
        for tid, count in self._prior_attempts.items():
            if tid in self._index:
                self._attempt[self._index[tid]] = count
        # A resumed task gets its whole retry budget again (as Airflow's "clear"
        # does); attempt numbers still go on, so each attempt keeps a unique number.
        self._base = list(self._attempt)
        self._downstream: list[list[int]] = [[] for _ in range(n)]
        for i, ups in enumerate(plan.upstream):
            for u in ups:
                self._downstream[u].append(i)
        self._success = [0] * n
        self._failed = [0] * n
        self._upstream_failed = [0] * n
        self._skipped = [0] * n
        # Ready tasks, one heap per distinct request (so a request that does not
        # fit is passed over in O(1), not rescanned): (-priority, -rank, sequence, i).
        self._admission = admission
        self._class = list(plan.request_of) if admission is not None and plan.request_of else []
        self._requests = list(plan.requests) if self._class else []
        self._exclusive = list(plan.exclusive) if admission is not None and plan.exclusive else []
        self._heaps: list[list[tuple[int, float, int, int]]] = [
            [] for _ in range(max(1, len(self._requests)))
        ]
        self._grants: dict[int, Grant] = {}
        self._rank = _upward_ranks(plan.estimates, self._downstream, n, plan.order)
        self._sequence = 0
        self._retry_heap: list[tuple[float, int, int]] = []  # (due_at, index, attempt)
        self._open = n  # tasks not in a final state
        self._running = 0
        self._cancelled_by_request = False
        self._jitter_seed = jitter_seed
        self._aborted: str | None = None  # why the run was stopped as failed (abort)
        self._restored_ids = set(restored)
        self._restored = [self._index[t] for t in self._restored_ids if t in self._index]
        # Decisions that need task outputs are asked of the caller: ``condition``
        # evaluates a task's ``when:`` (True, False, or an error message);
        # ``branch`` names the downstream ids a finished branch task chose.
        self._condition = condition
        self._branch = branch
        self._skipped_downstream = skipped_downstream
        self._conditional = list(plan.conditional) or [False] * n
        self._branching = list(plan.branching) or [False] * n
        self._approvals = list(plan.approvals) or [None] * n
        self._sensors = list(plan.sensors) or [None] * n
        self._waits = SensorWaits()
        self._sensing_since = dict(sensing_since or {})  # task id -> wait began (resume)
        # Dynamic fan-out: ``map_size`` says how many elements a mapped task's
        # input has (or why it has none); each element becomes a child task
        # ``id[k]``. A parent holds no worker: it is ``running`` while its
        # children run and ends when the last one does.
        self._map_size = map_size
        self._mapped = list(plan.mapped) or [None] * n
        self._parent: dict[int, int] = {}
        self._children: dict[int, list[int]] = {}
        self._children_left: dict[int, int] = {}
        self._children_ok: dict[int, int] = {}
        self._approval_heap: list[tuple[float, int]] = []  # (timeout_at, index)
        self._awaiting = 0  # tasks in awaiting_approval
        self._started = False

    # -- queries ---------------------------------------------------------------

    def state(self, task_id: str) -> TaskState:
        return self._state[self._index[task_id]]

    def attempt(self, task_id: str) -> int:
        return self._attempt[self._index[task_id]]

    def states(self) -> dict[str, TaskState]:
        return dict(zip(self._plan.ids, self._state, strict=True))

    def children(self, task_id: str) -> list[tuple[str, TaskState]]:
        """A mapped task's children in element order, with their states."""
        return [
            (self._plan.ids[j], self._state[j])
            for j in self._children.get(self._index[task_id], [])
        ]

    def parent(self, task_id: str) -> tuple[str, int] | None:
        """For a child ``id[k]``: the mapped task's id and ``k``; else ``None``."""
        j = self._index[task_id]
        p = self._parent.get(j)
        if p is None:
            return None
        return self._plan.ids[p], self._children[p].index(j)

    @property
    def finished(self) -> bool:
        """True when every task is in a final state."""
        return self._open == 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def has_ready(self) -> bool:
        """Queued tasks wait (for a worker or, with admission, for resources)."""
        for heap in self._heaps:
            while heap and self._state[heap[0][3]] is not _S.QUEUED:
                heapq.heappop(heap)  # stale: started by key, or cancelled meanwhile
            if heap:
                return True
        return False

    @property
    def uses_admission(self) -> bool:
        return self._admission is not None

    def grant(self, task_id: str) -> Grant | None:
        """The resources a running task holds (its GPU devices), or ``None``."""
        return self._grants.get(self._index[task_id])

    def rank(self, task_id: str) -> float:
        """The task's upward rank: estimated seconds from its start to the DAG's end."""
        return self._rank[self._index[task_id]]

    def withdraw(self) -> None:
        """Stop holding resources back for this run's waiting task (the run is
        paused): others may use them meanwhile."""
        if self._admission is not None:
            for i in range(len(self._state)):
                if self._state[i] is _S.QUEUED:
                    self._admission.withdraw((self, i))

    def close(self) -> None:
        """Give back everything this run holds (the runner calls it however the run
        ended): no grant or reservation outlives the run."""
        if self._admission is not None:
            self._admission.forget(self)
            self._grants.clear()

    @property
    def awaiting_approval(self) -> int:
        """How many tasks wait for an approval decision (they hold no worker slot)."""
        return self._awaiting

    @property
    def sensing(self) -> int:
        """How many sensors wait for their condition (they hold no worker slot)."""
        return len(self._waits)

    def next_due(self, pokes: bool = True) -> float | None:
        """When the earliest pending retry, approval timeout or sensor poke is due,
        or ``None``; without ``pokes`` (a paused run checks no sensor), sensor pokes
        are left out."""
        timeout_at = self._next_approval_timeout()
        poke_at = self._waits.next_poke() if pokes and self._waits else None
        if poke_at is not None and (timeout_at is None or poke_at < timeout_at):
            timeout_at = poke_at
        while self._retry_heap:
            due_at, i, attempt = self._retry_heap[0]
            if self._state[i] is _S.UP_FOR_RETRY and self._attempt[i] == attempt:
                return due_at if timeout_at is None else min(due_at, timeout_at)
            heapq.heappop(self._retry_heap)  # stale: cancelled meanwhile
        return timeout_at

    def run_state(self) -> RunState:
        """The run's state implied by the tasks' (``running`` until all are final)."""
        if not self.finished:
            return RunState.RUNNING
        if self._aborted is not None:
            return RunState.FAILED
        if any(s in (_S.FAILED, _S.UPSTREAM_FAILED) for s in self._state):
            return RunState.FAILED
        if self._cancelled_by_request or _S.CANCELLED in self._state:
            return RunState.CANCELLED
        return RunState.SUCCESS

    # -- events ------------------------------------------------------------------

    def start(self, now: float) -> list[Transition]:
        """Decide the initial states: restored successes count as done, roots queue."""
        if self._started:
            raise RuntimeError("Scheduler.start called twice")
        self._started = True
        out: list[Transition] = []
        for i in self._restored:
            if self._state[i] is _S.PENDING:
                self._state[i] = _S.SUCCESS
                self._open -= 1
        for i in self._restored:
            self._skip_again(i, now, out)
            self._propagate(i, now, out)
        for i, ups in enumerate(self._plan.upstream):
            if not ups and self._state[i] is _S.PENDING and not self._admit(i, now, out):
                self._propagate(i, now, out)
        return out

    def pop_ready(self, limit: int, now: float) -> list[Transition]:
        """Start up to ``limit`` queued tasks: ``queued -> running``, attempt + 1.

        Order: higher ``priority``, then higher upward rank (the longest estimated
        path to the end of the DAG: critical path first), then the order they
        became ready. With admission, a task starts only when its request is
        granted; the best one that does not fit holds a bounded reservation and
        smaller ones backfill around it (``engine.admission``)."""
        out: list[Transition] = []
        if self._admission is None:
            ready = self._heaps[0]
            while ready and len(out) < limit:
                i = heapq.heappop(ready)[3]
                if self._state[i] is not _S.QUEUED:
                    continue
                self._attempt[i] += 1
                self._running += 1
                out.append(self._move(i, _S.RUNNING, now))
            return out
        admission = self._admission
        while len(out) < limit:
            # The reservation first: when it is one of ours, nothing else may be
            # admitted once backfilling is used up, so it must be tried by key
            # (it may no longer head its heap); its heap entry goes stale.
            reserved = admission.reserved
            if isinstance(reserved, tuple) and reserved[0] is self:
                i = reserved[1]
                if self._state[i] is _S.QUEUED and self._try_start(i, now, out):
                    continue
            heads: list[tuple[tuple[int, float, int, int], int]] = []
            for c, heap in enumerate(self._heaps):
                while heap and self._state[heap[0][3]] is not _S.QUEUED:
                    heapq.heappop(heap)  # stale: cancelled meanwhile
                if heap:
                    heads.append((heap[0], c))
            if not heads:
                break
            heads.sort()
            for entry, c in heads:  # the best that may start; smaller ones backfill
                if self._try_start(entry[3], now, out):
                    heapq.heappop(self._heaps[c])
                    break
            else:
                break
        return out

    def _try_start(self, i: int, now: float, out: list[Transition]) -> bool:
        """Start queued task ``i`` if the admission grants its request."""
        assert self._admission is not None
        request = self._requests[self._class[i]] if self._class else _NOTHING
        exclusive = bool(self._exclusive) and self._exclusive[i]
        grant = self._admission.acquire((self, i), request, exclusive=exclusive)
        if grant is None:
            return False
        self._grants[i] = grant
        self._attempt[i] += 1
        self._running += 1
        out.append(self._move(i, _S.RUNNING, now))
        return True

    @property
    def aborted(self) -> str | None:
        """Why the run was stopped as ``failed`` (``abort``), or ``None``."""
        return self._aborted

    def will_retry(
        self, task_id: str, attempt: int, *, retryable: bool = True, fatal: bool = False
    ) -> bool:
        """Whether ``record`` would retry this failure of ``attempt`` (running now):
        lets the runner prepare a fallback only for a final failure. Changes nothing."""
        i = self._index[task_id]
        tries = attempt - self._base[i]
        return not fatal and should_retry(self._plan.retries[i], tries, retryable=retryable)

    def record(
        self,
        task_id: str,
        attempt: int,
        ok: bool,
        now: float,
        error: str | None = None,
        *,
        retryable: bool = True,
        fatal: bool = False,
        skip_downstream: str | None = None,
    ) -> list[Transition]:
        """An attempt ended. Late or stale reports (the task was cancelled or timed
        out meanwhile, or it is an older attempt) are ignored: returns ``[]``.

        ``error``: the failure's text, or a success's note (a fallback was used, the
        output came from the cache). ``retryable=False`` (not in ``retry_on``) fails
        the task without a retry; ``fatal=True`` (``fatal_on``) fails it and cancels
        every task that is not final, whatever the failure strategy.
        ``skip_downstream``: the success skips every direct downstream task that is
        still pending, for this reason."""
        i = self._index[task_id]
        if self._state[i] is not _S.RUNNING or self._attempt[i] != attempt:
            return []
        self._running -= 1
        self._release(i)
        out: list[Transition] = []
        if ok:
            skipped = self._branch_skips(i) if self._branching[i] else []
            if isinstance(skipped, str):  # the branch task returned something unusable
                out.append(self._move(i, _S.FAILED, now, skipped))
                self._propagate(i, now, out)
                return out
            out.append(self._move(i, _S.SUCCESS, now, error))
            why = f"not chosen by branch task '{task_id}'"
            if skip_downstream is not None:
                skipped, why = list(self._downstream[i]), _skip_message(task_id, skip_downstream)
            self._skip(skipped, why, now, out)
            self._propagate(i, now, out)
            return out
        policy = self._plan.retries[i]
        tries = attempt - self._base[i]
        if not fatal and should_retry(policy, tries, retryable=retryable):
            due_at = now + retry_delay(policy, tries, f"{self._jitter_seed}/{task_id}")
            out.append(self._move(i, _S.UP_FOR_RETRY, now, error, due_at=due_at))
            heapq.heappush(self._retry_heap, (due_at, i, attempt))
            return out
        out.append(self._move(i, _S.FAILED, now, error))
        if fatal:
            first = (error or "").splitlines()[0] if error else "a fatal error"
            self._cancel_all(
                now, f"cancelled: task '{task_id}' failed with a fatal error ({first})", out
            )
        elif self._fail_fast and not self._tolerated(i):
            self._cancel_all(now, f"cancelled: task '{task_id}' failed (fail_fast)", out)
        else:
            self._propagate(i, now, out)
        return out

    def due(self, now: float) -> list[Transition]:
        """Re-queue every ``up_for_retry`` task whose due time is ``<= now``."""
        out: list[Transition] = []
        while self._retry_heap and self._retry_heap[0][0] <= now:
            _, i, attempt = heapq.heappop(self._retry_heap)
            if self._state[i] is _S.UP_FOR_RETRY and self._attempt[i] == attempt:
                self._queue(i, now, out)
        self._time_out_approvals(now, out)
        return out

    def cancel(self, now: float, message: str = "cancelled by request") -> list[Transition]:
        """Cancel every task that is not final (running attempts must be stopped).

        A finished run stays as it ended: its state is final, so this returns ``[]``."""
        if self.finished:
            return []
        self._cancelled_by_request = True
        out: list[Transition] = []
        self._cancel_all(now, message, out)
        return out

    def decide_approval(
        self, task_id: str, approved: bool, now: float, message: str
    ) -> list[Transition]:
        """Decide a task in ``awaiting_approval``: approved -> ``queued``; rejected ->
        ``failed`` (downstream follow their trigger rules; ``fail_fast`` cancels the
        rest). ``message`` says who decided, when and why. A task not awaiting
        approval (decided, timed out or cancelled meanwhile): returns ``[]``."""
        i = self._index[task_id]
        if self._state[i] is not _S.AWAITING_APPROVAL:
            return []
        self._awaiting -= 1
        out: list[Transition] = []
        if approved:
            k = len(out)
            if self._mapped[i] is not None:
                self._state[i] = _S.PENDING  # decided: now expand like any mapped task
                self._open += 0
                out.append(
                    Transition(
                        task_id, _S.AWAITING_APPROVAL, _S.PENDING, self._attempt[i], now, message
                    )
                )
                if not self._expand(i, now, out):
                    self._propagate(i, now, out)
                return out
            self._queue(i, now, out)
            out[k] = out[k]._replace(message=message)
        else:
            self._fail_gate(i, now, message, out)
        return out

    def pokes_due(self, now: float) -> list[str]:
        """The sensors whose check (poke) is due at ``now``: the caller pokes each and
        reports with ``sensed``; none is handed out again before that."""
        if not self._waits:
            return []
        return [self._plan.ids[i] for i in self._waits.due(now)]

    def sensed(
        self, task_id: str, met: bool, now: float, message: str | None = None
    ) -> list[Transition]:
        """A sensor's poke found its condition ``met`` or not (``message``: what it
        found, or why not). Met: ``success``; unmet at or past its deadline:
        ``failed`` (``skipped`` with ``soft_fail``), its downstream follow their
        trigger rules; unmet before it: ``[]``, the next poke is scheduled. A sensor
        no longer waiting (cancelled meanwhile): ``[]``."""
        i = self._index[task_id]
        if self._state[i] is not _S.SENSING:
            return []
        verdict = self._waits.poked(i, met, now)
        if verdict is None:
            return []
        out: list[Transition] = []
        if verdict:
            out.append(self._move(i, _S.SUCCESS, now, message))
            self._propagate(i, now, out)
            return out
        policy = self._waits.policy(i)
        why = f"sensor timed out after {span(policy.timeout)} (timeout) waiting for " + (
            policy.waits_for or "its condition"
        )
        if message:
            why += f"; last check: {message}"
        if policy.soft_fail:
            out.append(self._move(i, _S.SKIPPED, now, f"{why} (soft_fail: skipped)"))
            self._propagate(i, now, out)
        else:
            self._fail_gate(i, now, why, out)
        return out

    def abort(self, now: float, message: str) -> list[Transition]:
        """Stop the run as ``failed`` (e.g. ``run_timeout_seconds``): cancel every task
        that is not final with ``message`` (running attempts must be stopped)."""
        if self.finished:
            return []
        self._aborted = message
        out: list[Transition] = []
        self._cancel_all(now, message, out)
        return out

    # -- internals -----------------------------------------------------------------

    def _move(
        self,
        i: int,
        new: TaskState,
        now: float,
        message: str | None = None,
        due_at: float | None = None,
    ) -> Transition:
        old = self._state[i]
        tid = self._plan.ids[i]
        check_task(tid, old, new)
        self._state[i] = new
        if new in FINAL_TASK_STATES:
            self._open -= 1
        return Transition(tid, old, new, self._attempt[i], now, message, due_at)

    def _queue(self, i: int, now: float, out: list[Transition]) -> None:
        out.append(self._move(i, _S.QUEUED, now))
        self._sequence += 1
        heap = self._heaps[self._class[i]] if self._class else self._heaps[0]
        heapq.heappush(heap, (-self._plan.priorities[i], -self._rank[i], self._sequence, i))

    def _release(self, i: int) -> None:
        if self._grants and self._grants.pop(i, None) is not None:
            assert self._admission is not None
            self._admission.release((self, i))

    def _propagate(self, first: int, now: float, out: list[Transition]) -> None:
        """Count ``first``'s final state in its downstream and decide them; repeat
        for every task that became final by that (a worklist, not recursion)."""
        work = [first]
        while work:
            i = work.pop()
            if i in self._parent:
                self._child_done(i, now, out, work)
            state = self._state[i]
            for d in self._downstream[i]:
                if state is _S.SUCCESS:
                    self._success[d] += 1
                    if (
                        self._plan.rules[d] is _ALL_SUCCESS
                        and not (self._failed[d] or self._upstream_failed[d] or self._skipped[d])
                        and self._state[d] is _S.PENDING
                    ):
                        # The common case, decided here as trigger_rules does: wait
                        # for the rest, or run when every upstream succeeded.
                        if self._success[d] == len(self._plan.upstream[d]) and not self._admit(
                            d, now, out
                        ):
                            work.append(d)
                        continue
                elif state is _S.FAILED:
                    self._failed[d] += 1
                elif state is _S.SKIPPED:
                    self._skipped[d] += 1
                else:  # upstream_failed or cancelled
                    self._upstream_failed[d] += 1
                if self._state[d] is not _S.PENDING:
                    continue
                verdict = decide(
                    self._plan.rules[d],
                    UpstreamCounts(
                        total=len(self._plan.upstream[d]),
                        success=self._success[d],
                        failed=self._failed[d],
                        upstream_failed=self._upstream_failed[d],
                        skipped=self._skipped[d],
                    ),
                )
                if verdict is Verdict.RUN:
                    if not self._admit(d, now, out):
                        work.append(d)
                elif verdict is Verdict.SKIP:
                    out.append(
                        self._move(
                            d, _S.SKIPPED, now, f"skipped by trigger rule {self._plan.rules[d]}"
                        )
                    )
                    work.append(d)
                elif verdict is Verdict.UPSTREAM_FAILED:
                    out.append(
                        self._move(
                            d,
                            _S.UPSTREAM_FAILED,
                            now,
                            f"trigger rule {self._plan.rules[d]} can no longer be met",
                        )
                    )
                    work.append(d)

    def _admit(self, i: int, now: float, out: list[Transition]) -> bool:
        """A task whose trigger rule is met: queue it, unless its ``when:`` says
        skip (``skipped``) or cannot be evaluated (``failed``). Returns True when
        queued; otherwise the caller propagates the final state."""
        if self._conditional[i] and self._condition is not None:
            verdict = self._condition(self._plan.ids[i])
            if verdict is False:
                out.append(self._move(i, _S.SKIPPED, now, "skipped: its condition is false"))
                return False
            if isinstance(verdict, str):
                out.append(self._move(i, _S.FAILED, now, verdict))
                return False
        if self._approvals[i] is not None:  # a gate: decided before it queues
            self._await_approval(i, now, out)
            return True
        sensor = self._sensors[i]
        if sensor is not None:  # waits without a worker: poked by the caller
            self._attempt[i] += 1
            since = self._sensing_since.pop(self._plan.ids[i], None)
            deadline = self._waits.start(i, sensor, now, since=since)
            message = (
                f"waiting for {sensor.waits_for or 'its condition'}: checked every "
                f"{span(sensor.poke_interval)}, for at most {span(sensor.timeout)}"
            )
            if since is not None and since < now:  # resumed: the wait goes on
                message += f" ({span(round(now - since, 1))} of it passed before the resume)"
            out.append(self._move(i, _S.SENSING, now, message, due_at=deadline))
            return True
        if self._mapped[i] is not None:
            return self._expand(i, now, out)
        self._queue(i, now, out)
        return True

    def _expand(self, i: int, now: float, out: list[Transition]) -> bool:
        """Fan a mapped task out: one child per element. True when children run;
        False when it already ended (no elements, or its input is unusable)."""
        tid = self._plan.ids[i]
        size = self._map_size(tid) if self._map_size is not None else 0
        if isinstance(size, str):
            out.append(self._move(i, _S.FAILED, now, size))
            return False
        out.append(self._move(i, _S.QUEUED, now))
        self._attempt[i] += 1
        out.append(self._move(i, _S.RUNNING, now, f"mapped over {size} elements"))
        children: list[int] = []
        restored = 0
        for k in range(size):
            j = self._add_child(i, f"{tid}[{k}]")
            children.append(j)
        self._children[i] = children
        self._children_left[i] = size
        self._children_ok[i] = 0
        for j in children:
            if self._plan.ids[j] in self._restored_ids:  # resume: committed before
                self._state[j] = _S.SUCCESS
                self._open -= 1
                restored += 1
            else:
                self._queue(j, now, out)
        self._children_left[i] -= restored
        self._children_ok[i] += restored
        if self._children_left[i] == 0:
            out.append(self._finish_parent(i, now))
            return False
        return True

    def _add_child(self, parent: int, child_id: str) -> int:
        j = len(self._state)
        plan = self._plan
        plan.ids.append(child_id)
        plan.upstream.append([])
        plan.rules.append(TriggerRule.ALL_SUCCESS)
        plan.retries.append(plan.retries[parent])
        plan.priorities.append(plan.priorities[parent])
        if self._class:
            self._class.append(self._class[parent])
        if self._exclusive:
            self._exclusive.append(self._exclusive[parent])
        self._rank.append(self._rank[parent])
        self._index[child_id] = j
        self._parent[j] = parent
        prior = self._prior_attempts.get(child_id, 0)
        self._state.append(_S.PENDING)
        self._attempt.append(prior)
        self._base.append(prior)
        for counters in (self._success, self._failed, self._upstream_failed, self._skipped):
            counters.append(0)
        self._conditional.append(False)
        self._branching.append(False)
        self._approvals.append(None)
        self._sensors.append(None)
        self._mapped.append(None)
        self._downstream.append([])
        self._open += 1
        return j

    def _child_done(self, j: int, now: float, out: list[Transition], work: list[int]) -> None:
        """A child reached a final state: when it was the last, end its parent."""
        p = self._parent[j]
        self._children_left[p] -= 1
        if self._state[j] is _S.SUCCESS:
            self._children_ok[p] += 1
        if self._children_left[p] == 0 and self._state[p] is _S.RUNNING:
            out.append(self._finish_parent(p, now))
            work.append(p)

    def _finish_parent(self, p: int, now: float) -> Transition:
        total = len(self._children[p])
        ok = self._children_ok[p]
        ratio = self._mapped[p] or 1.0
        failed = [self._plan.ids[j] for j in self._children[p] if self._state[j] is not _S.SUCCESS]
        shown = ", ".join(failed[:10]) + (
            f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        )
        if ok >= ratio * total - 1e-9:
            note = f"{ok} of {total} elements succeeded" + (f"; failed: {shown}" if failed else "")
            return self._move(p, _S.SUCCESS, now, note)
        return self._move(
            p,
            _S.FAILED,
            now,
            f"{ok} of {total} elements succeeded, fewer than min_success_ratio {ratio:g}; "
            f"failed: {shown}",
        )

    def _tolerated(self, i: int) -> bool:
        """A child whose parent accepts some failures (min_success_ratio < 1)."""
        p = self._parent.get(i)
        return p is not None and (self._mapped[p] or 1.0) < 1.0

    def _await_approval(self, i: int, now: float, out: list[Transition]) -> None:
        gate = self._approvals[i]
        assert gate is not None
        due_at = None if gate.timeout_seconds is None else now + gate.timeout_seconds
        message = gate.message or "awaiting approval"
        out.append(self._move(i, _S.AWAITING_APPROVAL, now, message, due_at=due_at))
        self._awaiting += 1
        if due_at is not None:
            heapq.heappush(self._approval_heap, (due_at, i))

    def _next_approval_timeout(self) -> float | None:
        while self._approval_heap:
            due_at, i = self._approval_heap[0]
            if self._state[i] is _S.AWAITING_APPROVAL:
                return due_at
            heapq.heappop(self._approval_heap)  # stale: decided or cancelled meanwhile
        return None

    def _time_out_approvals(self, now: float, out: list[Transition]) -> None:
        while self._approval_heap and self._approval_heap[0][0] <= now:
            _, i = heapq.heappop(self._approval_heap)
            if self._state[i] is _S.AWAITING_APPROVAL:
                self._awaiting -= 1
                gate = self._approvals[i]
                timeout = gate.timeout_seconds if gate is not None else None
                self._fail_gate(
                    i,
                    now,
                    f"approval timed out: no decision within {timeout:g}s "
                    "(approval.timeout_seconds)",
                    out,
                )

    def _fail_gate(self, i: int, now: float, message: str, out: list[Transition]) -> None:
        """A rejected or timed-out approval fails the task, as a failed attempt would."""
        out.append(self._move(i, _S.FAILED, now, message))
        if self._fail_fast:
            tid = self._plan.ids[i]
            self._cancel_all(now, f"cancelled: task '{tid}' failed (fail_fast)", out)
        else:
            self._propagate(i, now, out)

    def _skip(self, skipped: list[int], why: str, now: float, out: list[Transition]) -> None:
        for d in skipped:
            if self._state[d] is _S.PENDING:
                out.append(self._move(d, _S.SKIPPED, now, why))
                self._propagate(d, now, out)

    def _skip_again(self, i: int, now: float, out: list[Transition]) -> None:
        """A restored task's skips, decided as when it succeeded (resume)."""
        task_id = self._plan.ids[i]
        reason = self._skipped_downstream(task_id) if self._skipped_downstream else None
        if reason is not None:
            self._skip(list(self._downstream[i]), _skip_message(task_id, reason), now, out)
        elif self._branching[i]:
            skipped = self._branch_skips(i)
            if not isinstance(skipped, str):  # it chose well when it ran, or it would have failed
                self._skip(skipped, f"not chosen by branch task '{task_id}'", now, out)

    def _branch_skips(self, i: int) -> list[int] | str:
        """The direct downstream a finished branch task did not choose, or why its
        choice is unusable."""
        if self._branch is None:
            return []
        choice = self._branch(self._plan.ids[i])
        chosen = {choice} if isinstance(choice, str) else set(choice)
        names = {self._plan.ids[d]: d for d in self._downstream[i]}
        unknown = sorted(chosen - names.keys())
        if unknown:
            return (
                f"branch task '{self._plan.ids[i]}' chose {', '.join(map(repr, unknown))}, "
                f"which is not directly downstream of it (downstream: "
                f"{', '.join(sorted(names)) or 'none'})"
            )
        return [d for name, d in names.items() if name not in chosen]

    def _cancel_all(self, now: float, message: str, out: list[Transition]) -> None:
        for i, state in enumerate(self._state):
            if state not in FINAL_TASK_STATES:
                if state is _S.RUNNING:
                    if i not in self._children:  # a mapped parent holds no worker
                        self._running -= 1
                    self._release(i)
                elif state is _S.AWAITING_APPROVAL:
                    self._awaiting -= 1
                elif state is _S.SENSING:
                    self._waits.drop(i)
                elif state is _S.QUEUED and self._admission is not None:
                    self._admission.withdraw((self, i))
                out.append(self._move(i, _S.CANCELLED, now, message))


def restored_successes(states: Mapping[str, str]) -> list[str]:
    """Ids whose stored state is ``success`` (what resume must not run again)."""
    return [tid for tid, s in states.items() if s == _S.SUCCESS]


_NOTHING = Request(cpu=0.0)


def _kahn(waiting: list[int], downstream: list[list[int]]) -> list[int]:
    """A breadth-first topological order (Kahn): ``waiting[i]`` is how many upstream
    task ``i`` has (consumed). Shorter than the DAG when there is a cycle."""
    order = [i for i, count in enumerate(waiting) if not count]
    for i in order:  # grows while iterated
        for d in downstream[i]:
            waiting[d] -= 1
            if not waiting[d]:
                order.append(d)
    return order


def _upward_ranks(
    estimates: list[float], downstream: list[list[int]], n: int, order: list[int]
) -> list[float]:
    """Each task's upward rank: its estimate plus the largest rank downstream (the
    longest estimated path from its start to the end of the DAG). Estimates
    default to 1 s each. Kahn's order (``order`` when the plan has it), reversed:
    O(V + E), no recursion."""
    cost = estimates if estimates else [1.0] * n
    if len(order) != n:
        waiting = [0] * n
        for ds in downstream:
            for d in ds:
                waiting[d] += 1
        order = _kahn(waiting, downstream)
    rank = list(cost)
    for i in reversed(order):
        ds = downstream[i]
        if ds:
            rank[i] = cost[i] + max(rank[d] for d in ds)
    return rank


def _requests(
    pipeline: Pipeline, operator_defaults: Mapping[str, Resources]
) -> tuple[list[Request], list[int]]:
    """The distinct requests of ``pipeline``'s tasks and each task's index into
    them; ``([], [])`` when no task asks for anything."""
    if (
        pipeline.defaults.resources is None
        and pipeline.defaults.pool is None
        and not any(t.resources is not None or t.pool is not None for t in pipeline.tasks)
        and not (
            operator_defaults and any(t.operator_name in operator_defaults for t in pipeline.tasks)
        )
    ):
        return [], []  # nobody asks for anything (the common, large case): no admission
    table: dict[tuple[object, ...], int] = {}
    requests: list[Request] = []
    of: list[int] = []
    any_request = False
    for t in pipeline.tasks:
        res = pipeline.resources_of(t) or operator_defaults.get(t.operator_name)
        pool = pipeline.pool_of(t)
        if res is None and pool is None:
            request = _NOTHING
        else:
            any_request = True
            request = to_request(res, pool)
        key = (
            request.cpu,
            request.memory_gb,
            request.gpu,
            request.disk_gb,
            tuple(sorted(request.custom.items())),
            request.pool,
        )
        k = table.get(key)
        if k is None:
            k = table[key] = len(requests)
            requests.append(request)
        of.append(k)
    return (requests, of) if any_request else ([], [])


def to_request(resources: Resources | None, pool: str | None = None) -> Request:
    """The engine's ``Request`` for a spec's ``resources:`` (and ``pool:``)."""
    if resources is None:
        return Request(cpu=0.0, pool=pool)
    return Request(
        cpu=resources.cpu,
        memory_gb=resources.memory_gb,
        gpu=resources.gpu,
        disk_gb=resources.disk_gb,
        custom=resources.custom,
        pool=pool,
    )


def _skip_message(task_id: str, reason: str) -> str:
    return f"skipped: task '{task_id}' skips its downstream ({reason})"
