"""The metadata store's interface and its records.

The store holds pipelines (versioned by content hash), runs, task runs, attempts,
events (every state transition with its timestamp) and output references, plus
two things that outlive runs: cache entries (a task's output by cache key) and
circuit breaker states (by circuit name).  The
runner writes through :meth:`Store.commit`, one transaction per scheduling tick
(DESIGN.md, durability rule): a ``Batch`` is applied atomically or not at all.

Leases (``engine.lease``): a run's row holds its lease (owner, epoch, expiry).
``claim_run`` takes it by compare-and-set on the epoch the claimer read, so of
simultaneous claimers exactly one wins (``claim_next`` picks the next queued run and
claims it in one transaction: a worker's way in); a ``Batch`` carries the ``Fence`` of its
run (the epoch its process claimed), and ``commit`` applies nothing unless that
epoch is still the run's (``LeaseLost``). A fenced commit renews the lease.

Timestamps are float seconds since the epoch (UTC); ``None`` means "not yet".
State strings are exactly DESIGN.md's (``engine.states``). The records the run
loop writes per task (task runs, attempts, events, outputs) are named tuples
whose fields are their table's columns in order: cheap to make (several per
task) and written as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

if TYPE_CHECKING:  # the engine (and pydantic with it) is not loaded by `stageflow runs list`
    from stageflow.engine.circuit import CircuitState

__all__ = [
    "CACHED_NOTES",
    "CACHED_SKIPPED_DOWNSTREAM",
    "RAN_NOTES",
    "SKIPPED_DOWNSTREAM",
    "SKIPPING_NOTES",
    "Activity",
    "AlertRecord",
    "AlertRuleRecord",
    "AttemptRecord",
    "AuditEntry",
    "Batch",
    "CacheEntry",
    "ControlRequest",
    "EventRecord",
    "Fence",
    "Histogram",
    "MetricSample",
    "NotificationRecord",
    "OutputRef",
    "PipelineRecord",
    "PoolHolding",
    "PoolRecord",
    "RetryLink",
    "RunRecord",
    "RunUpdate",
    "ScheduleRecord",
    "Store",
    "TaskRunRecord",
    "TaskRunStat",
    "Tick",
    "TokenRecord",
    "VersionCount",
    "WorkerRecord",
]


@dataclass(frozen=True, slots=True)
class PipelineRecord:
    name: str
    version: str  # content hash of the canonical spec JSON
    spec_json: str
    created_at: float
    # The service (schema 11): the team that owns the pipeline (None: nobody's, as a
    # pipeline saved by the CLI), and when it was deleted (its runs stay readable).
    owner: str | None = None
    deleted_at: float | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    pipeline: str
    pipeline_version: str
    state: str  # queued | running | paused | success | failed | cancelled
    params: dict[str, Any]
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_started_at: float | None = None  # the owner process's create time (guards pid reuse)
    heartbeat_at: float | None = None
    executor: str | None = None
    source: str | None = None  # where the pipeline was loaded from (file path), for resume
    # The lease (schema 6; engine.lease): who holds the run, the epoch of its claim
    # (0: never claimed) and when it expires (None: no lease, e.g. the run ended).
    lease_owner: str | None = None
    lease_epoch: int = 0
    lease_expires_at: float | None = None
    priority: int = 0  # higher runs first when runs wait in the store's queue
    # The service (schema 11): the team that owns the run (its pipeline's owner; None
    # for the CLI's runs) and who asked for it (a token's name, a user, a schedule).
    owner: str | None = None
    triggered_by: str | None = None


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """A change to a run row; fields left ``None`` are not changed."""

    run_id: str
    state: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    heartbeat_at: float | None = None


#: A task run's note when its success skipped its direct downstream (its error: why).
SKIPPED_DOWNSTREAM = "skipped downstream"
#: The same for a cache hit that replayed its producer's skip (``runtime.cache``).
CACHED_SKIPPED_DOWNSTREAM = "cached, skipped downstream"
#: The notes whose success skipped the task's direct downstream (resume decides again).
SKIPPING_NOTES = frozenset({SKIPPED_DOWNSTREAM, CACHED_SKIPPED_DOWNSTREAM})
#: The notes of a success served from the cache (no attempt of its own ran).
CACHED_NOTES = frozenset({"cached", CACHED_SKIPPED_DOWNSTREAM})
#: The notes of a success whose own attempt ran (a cache hit or a fallback did not):
#: what task statistics and history estimates time.
RAN_NOTES = frozenset({"", SKIPPED_DOWNSTREAM})


class TaskRunRecord(NamedTuple):
    """The current row of one task in one run (upserted whole)."""

    run_id: str
    task_id: str
    state: str
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    note: str | None = None  # "cached" or "fallback": how a success was reached


class AttemptRecord(NamedTuple):
    """One attempt of a task run (upserted by run_id, task_id, attempt)."""

    run_id: str
    task_id: str
    attempt: int
    state: str
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    # Scheduling and usage (schema 5). ``queued_at``: when the task became ready
    # for this attempt (the wait for a worker or resources is started_at - queued_at);
    # ``request_json``: the resources it held, as JSON ({"cpu": 2, "memory_gb": 4, ...});
    # ``gpu_devices``: the device indices assigned ("0,1"); measured: CPU seconds,
    # peak resident memory in MiB, GPU seconds (GPUs held x wall time).
    queued_at: float | None = None
    request_json: str | None = None
    gpu_devices: str | None = None
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None
    gpu_seconds: float | None = None
    # Table rows (schema 8): the rows of the attempt's table inputs, summed, and of
    # its table output; ``None`` when it took no table or returned none.
    rows_in: int | None = None
    rows_out: int | None = None


class TaskRunStat(NamedTuple):
    """One task run of a pipeline's recent runs, for statistics (``Store.task_run_stats``):
    its run's id, state and creation time, the task run's final row, and the times of
    its last attempt (``None`` when it has none, e.g. a cache hit or a mapped parent)."""

    run_id: str
    run_state: str
    run_created_at: float
    task_id: str
    state: str
    attempts: int
    attempt_started_at: float | None
    attempt_ended_at: float | None
    ended_at: float | None
    error: str | None
    note: str | None


class VersionCount(NamedTuple):
    """One saved pipeline version with how many runs used it (``Store.pipeline_versions``)."""

    pipeline: str
    version: str
    saved_at: float  # when the version was first saved (a run of it was created)
    runs: int
    last_run_at: float | None  # the newest of those runs' creation; None: no run
    owner: str | None = None  # the version's owner (schema 11)


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """A global pool (schema 7; ``runtime.pools``): its name and how many slots it has."""

    name: str
    slots: int
    updated_at: float


class PoolHolding(NamedTuple):
    """One slot of a pool held by one attempt of a task, under its run's lease epoch
    (the holding is live while that lease is: ``Store.acquire_pool_slot``)."""

    pool: str
    run_id: str
    task_id: str
    attempt: int
    lease_epoch: int
    acquired_at: float


class EventRecord(NamedTuple):
    """One state transition; ``task_id`` is ``None`` for a run-level transition."""

    run_id: str
    task_id: str | None
    from_state: str | None
    to_state: str
    at: float
    attempt: int = 0
    message: str | None = None


class OutputRef(NamedTuple):
    """Where a task's output lives: inline bytes in the store, or a file URI."""

    run_id: str
    task_id: str
    kind: Literal["inline", "file"]
    serializer: str  # e.g. "json", "pickle", "parquet", "joblib", "none"
    size: int
    sha256: str
    data: bytes | None = None  # set when kind == "inline"
    uri: str | None = None  # set when kind == "file"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A task's output stored under its cache key (``runtime.cache``).

    ``output`` names the run and task that produced it; ``expires_at`` (from
    ``cache_ttl_seconds``) is ``None`` for an entry that never expires.
    """

    key: str
    pipeline: str
    output: OutputRef
    created_at: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A request to the process running a run (``runtime.control``): ``cancel``,
    ``pause``, ``unpause``, or ``approve``/``reject`` of ``task_id``'s approval gate.
    ``request_id`` is assigned by the store (rising per run); 0 before it is stored."""

    run_id: str
    request: Literal["cancel", "pause", "unpause", "approve", "reject"]
    requested_at: float
    requested_by: str
    task_id: str | None = None
    comment: str | None = None
    request_id: int = 0


class Fence(NamedTuple):
    """A batch's lease on its run: committed only while the run's lease epoch is
    still ``epoch``; the commit renews the lease to ``expires_at`` (``None``: clears
    it, as a run's final commit does) and sets ``heartbeat_at`` to ``renewed_at``."""

    epoch: int
    renewed_at: float
    expires_at: float | None


class RecordText(NamedTuple):
    """A run's reproducibility record (``runtime.lineage``) as JSON text."""

    run_id: str
    record_json: str
    updated_at: float


@dataclass(slots=True)
class Batch:
    """Everything one scheduling tick changes; applied in one transaction.

    ``fences``: run_id -> ``Fence``; the batch is applied only if every fenced run
    still has that lease epoch (else ``LeaseLost``, nothing applied)."""

    task_runs: list[TaskRunRecord] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    outputs: list[OutputRef] = field(default_factory=list)
    runs: list[RunUpdate] = field(default_factory=list)
    cache: list[CacheEntry] = field(default_factory=list)  # upserted by key
    records: list[RecordText] = field(default_factory=list)  # upserted by run
    fences: dict[str, Fence] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.task_runs or self.attempts or self.events or self.outputs or self.runs
        ) or bool(self.cache or self.records)

    def extend(self, later: Batch) -> None:
        """Append ``later``'s changes after this batch's (one transaction for both
        keeps their order: the store applies the last record of a row)."""
        self.task_runs.extend(later.task_runs)
        self.attempts.extend(later.attempts)
        self.events.extend(later.events)
        self.outputs.extend(later.outputs)
        self.runs.extend(later.runs)
        self.cache.extend(later.cache)
        self.records.extend(later.records)
        self.fences.update(later.fences)  # the later renewal (or clearing) wins


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as stored (schema 11): its public id, its name, role and owner, and
    the sha256 of its secret part (the secret itself is never stored)."""

    token_id: str
    name: str
    role: str  # viewer | operator | editor | admin
    owner: str | None
    secret_sha256: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


#: A schedule's tick that fires a run (``Store.create_run(tick=...)``): the schedule's
#: name, its logical time, and the start of the data interval the run covers (the
#: schedule's previous fire time; the logical time itself when left out).
Tick = tuple[str, float] | tuple[str, float, float]


@dataclass(frozen=True, slots=True)
class RetryLink:
    """A retry run's place in its chain (schema 17; ``engine.run_retry``): the failed
    run it retries (one retry per failed run), the chain's first run, its attempt
    number (the first run is attempt 1) and when it is due (the queue skips it until)."""

    retry_of: str
    first_run_id: str
    attempt: int
    due_at: float


@dataclass(frozen=True, slots=True)
class TickRun:
    """One tick's run for ``Store.create_tick_runs``: the queued run, its task ids, its
    pipeline version, the tick (schedule, logical time, data interval start), and when
    the schedule fires after it (``None``: never again)."""

    run: RunRecord
    task_ids: tuple[str, ...]
    pipeline: PipelineRecord
    tick: tuple[str, float, float]
    next_at: float | None


#: What ``Store.create_tick_runs`` did with one ``TickRun``.
TickOutcome = Literal["created", "taken", "id_taken"]


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule as stored (schema 13): what it fires (a saved pipeline, by name: its
    latest version when it fires), when (``spec``: ``engine.schedules.ScheduleSpec``'s
    fields), with which run parameters and priority, at most ``max_active_runs``
    unfinished runs at once (``None``: no limit), whether it is enabled, and the
    logical time it last fired (``None``: never) and the next (``next_at``)."""

    name: str
    pipeline: str
    spec: dict[str, Any]
    params: dict[str, Any]
    priority: int = 0
    max_active_runs: int | None = None
    enabled: bool = True
    last_tick: float | None = None
    owner: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    next_at: float | None = None  # when it fires next (None: never again)


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """One delivery of a notification to one channel (schema 14, ``runtime.notify``):
    recorded once per (``key``, ``channel_index``); ``state`` ``pending`` (due at
    ``next_try_at``), ``sending`` (claimed until ``claimed_until``: a claimer that
    died leaves it due again then), ``delivered`` or ``failed`` (after its last try).
    ``target`` is the channel as it may be shown (a webhook's scheme and host, a
    secret's name); ``channel`` and ``message`` (JSON objects) are what is sent, with
    every ``${secret:NAME}`` unresolved."""

    id: int
    key: str
    channel_index: int
    created_at: float
    kind: str
    pipeline: str | None
    run_id: str | None
    task: str | None
    owner: str | None
    channel_kind: str
    target: str
    channel: dict[str, Any]
    message: dict[str, Any]
    state: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    next_try_at: float | None = None
    claimed_until: float | None = None
    delivered_at: float | None = None


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker as recorded (schema 12): its lease owner name, where it runs, its
    capacity (``cpu``, ``memory_gb``, ``gpu``, custom resources) and how many runs
    it takes at once; ``heartbeat_at`` moves on every few seconds while it lives."""

    owner: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    capacity: dict[str, float]
    concurrency: int


class MetricSample(NamedTuple):
    """One sample of a gauge (schema 16; ``runtime.monitor``): its name, the start of
    its sampling slot, its value, the host it describes (``''``: the store's own
    gauges) and its labels."""

    name: str
    at: float
    value: float
    host: str = ""
    labels: dict[str, str] = {}  # never mutated: a NamedTuple default


class Histogram(NamedTuple):
    """One labelled series of a histogram read from the store: its label values, how
    many values, their sum, how many are at most each bucket bound."""

    labels: tuple[str, ...]
    observed: int
    total: float
    within: list[int]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One mutating request or control action (schema 11): who, what, when, from
    where, with what result (an HTTP status). ``entry_id`` is 0 until stored."""

    at: float
    actor: str
    action: str
    status: int
    role: str | None = None
    owner: str | None = None
    target: str | None = None
    client: str | None = None
    detail: str | None = None
    entry_id: int = 0


@dataclass(frozen=True, slots=True)
class AlertRuleRecord:
    """An alert rule (schema 15; ``engine.alerts``): ``threshold`` a number, a text or
    ``None`` (``below_baseline``); ``source`` is ``spec`` (registered with a saved
    pipeline) or ``user`` (added by hand); ``channels`` as the spec writes them."""

    rule_id: str
    pipeline: str | None
    task: str | None
    metric: str
    condition: str
    threshold: float | str | None
    severity: str
    cooldown_seconds: float
    window_seconds: float
    k: float
    runs: int
    enabled: bool
    description: str
    channels: list[dict[str, Any]]
    owner: str | None
    source: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert (schema 15): of ``rule_id`` (``deadline`` for a deadline's) for
    ``subject`` (``pipeline:P``, ``task:P.T``, ``host:H``, ``run:ID``, ``task-run:ID.T``);
    ``dedup_key`` makes a deadline's alert once per run (task run) for ever."""

    alert_id: str
    rule_id: str
    subject: str
    state: str  # open | acknowledged | resolved
    severity: str
    message: str
    opened_at: float
    value: float | str | None = None
    pipeline: str | None = None
    run_id: str | None = None
    task: str | None = None
    owner: str | None = None
    channels: list[dict[str, Any]] = field(default_factory=list)
    dedup_key: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None


class Activity(NamedTuple):
    """The queue and the workers at one moment (``Store.activity``): the task runs of
    unfinished runs by state, when the oldest queued run was created (``None``: none
    waits), how many unfinished runs have an expired lease (their owner went silent)."""

    tasks: dict[str, int]
    oldest_queued_at: float | None
    expired_leases: int


class Store(Protocol):
    """The metadata store. One instance is used from one thread at a time."""

    url: str

    def save_pipeline(self, record: PipelineRecord) -> None:
        """Insert the pipeline version if absent (idempotent on name+version)."""

    def publish_pipeline(self, record: PipelineRecord) -> bool:
        """Save the version as the service does: insert it, or bring back a deleted
        one (its ``created_at`` becomes the record's, so it is the latest again);
        True when it was new or deleted."""

    def requeue_run(
        self,
        run_id: str,
        from_state: str,
        reset: Sequence[str],
        events: Sequence[EventRecord],
        now: float,
    ) -> bool:
        """Put an ended run back in the queue for a worker to resume, if it is still
        ``from_state`` (compare-and-set): ``running`` without a lease, ``reset`` task
        runs ``pending``, ``events`` added, one transaction; False when it moved on."""

    def delete_pipeline(self, name: str, now: float) -> bool:
        """Mark every version of ``name`` deleted (runs keep reading theirs);
        False when there is no live version."""

    def pipeline_owner(self, name: str) -> tuple[bool, str | None]:
        """(whether ``name`` has any version, deleted or not; the owner of its
        newest version)."""

    def get_pipeline(self, name: str, version: str) -> PipelineRecord:
        """Raise ``StoreError`` when absent (deleted versions are found: their runs read them)."""

    def latest_pipeline(self, name: str) -> PipelineRecord:
        """The most recently saved live version of ``name``; raise ``StoreError`` when none."""

    def create_run(
        self,
        run: RunRecord,
        task_ids: Sequence[str],
        *,
        pipeline: PipelineRecord | None = None,
        tick: Tick | None = None,
        retry: RetryLink | None = None,
        schedule_object: tuple[str, str] | None = None,
    ) -> None:
        """Insert the run and one ``pending`` task run per id, and ``pipeline``'s version
        if absent (as ``save_pipeline``), in one transaction; ``tick``: (schedule,
        logical time) that fires it, recorded with it; ``retry``: the failed run it
        retries (the queue skips it until ``retry.due_at``); ``schedule_object``:
        (schedule, object key) of an object schedule that fires it. Raises ``RunIdTaken``
        when the run id exists, ``TickTaken`` when the tick or object made a run already,
        ``RetryTaken`` when the failed run has its retry already (nothing written)."""

    def create_tick_runs(self, items: Sequence[TickRun]) -> list[TickOutcome]:
        """Create each item's run as ``create_run(tick=...)`` does and move its
        schedule on to the tick (``advance_schedule``), all in one transaction (a
        scheduler's pass fires thousands of ticks at once). Per item, in order:
        ``created``; ``taken`` (another scheduler fired the tick first: no run, the
        schedule still moves on); or ``id_taken`` (its run id exists: nothing written for
        it, the schedule stays; draw another id and try again)."""

    def commit(self, batch: Batch) -> None:
        """Apply a whole batch in one transaction (upserts for rows, inserts for events).

        Its fences first: a fenced run whose lease epoch changed raises ``LeaseLost``
        (naming the new owner) and nothing is applied; otherwise its lease is renewed."""

    def claim_run(
        self,
        run_id: str,
        *,
        owner: str,
        expected_epoch: int,
        host: str,
        pid: int,
        started_at: float,
        now: float,
        ttl: float,
    ) -> int:
        """Take the run's lease if its epoch is still ``expected_epoch`` (one
        conditional update): owner, epoch + 1, expiry ``now + ttl``, owner_* and
        heartbeat_at. Returns the new epoch. Raises ``RunOwned`` naming the owner
        when the epoch moved on (another claimer won), ``RunNotFound``."""

    def renew_lease(self, run_id: str, epoch: int, now: float, ttl: float) -> bool:
        """Extend the lease to ``now + ttl`` if its epoch is still ``epoch``; False if not."""

    def release_lease(self, run_id: str, epoch: int, now: float) -> bool:
        """Move the epoch on and expire the lease ``now`` if the epoch is still ``epoch``
        (a worker handing a run back to the queue); False if not."""

    def claimable_runs(self, now: float, limit: int) -> list[RunRecord]:
        """Runs a worker may claim at ``now``, ``priority`` high first, then oldest."""

    def claim_next(
        self,
        *,
        owner: str,
        host: str,
        pid: int,
        now: float,
        ttl: float,
        started_at: float | None = None,
        exclude: Collection[str] = (),
    ) -> tuple[RunRecord, int] | None:
        """Pick the first of ``claimable_runs(now)`` not in ``exclude`` and take its lease
        (as ``claim_run``), in one transaction: of any number of simultaneous callers,
        each run goes to exactly one. Returns the run as it stood in the queue (its
        previous lease included) and the new epoch; ``None`` when nothing is claimable."""

    def get_run(self, run_id: str) -> RunRecord:
        """Raise ``RunNotFound`` (naming the run_id and ``stageflow runs list``) when absent."""

    def list_runs(self, *, limit: int = 100, pipeline: str | None = None) -> list[RunRecord]:
        """Newest first (by created_at, then run_id)."""

    def started_runs(self) -> list[RunRecord]:
        """The running and paused runs, oldest start first."""

    def query_runs(
        self,
        *,
        pipeline: str | None = None,
        states: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 100,
        owner: str | None = None,
        triggered_by: str | None = None,
        unowned: bool = False,
    ) -> list[RunRecord]:
        """The runs matching every filter given, newest first (by created_at, then
        run_id, both descending): of ``pipeline``; in any of ``states``; created in
        ``[since, until)``; of ``owner`` (``unowned``: of none); asked for by
        ``triggered_by``; after
        ``before`` = (created_at, run_id) in that order (the last run of the previous
        page: keyset pagination). At most ``limit``."""

    def pipeline_versions(self, name: str | None = None) -> list[VersionCount]:
        """Every saved pipeline version (only ``name``'s when given) with its run count:
        by pipeline name, then newest saved first."""

    def task_runs(self, run_id: str) -> list[TaskRunRecord]:
        """In the order the task runs were created."""

    def attempts(self, run_id: str, task_id: str | None = None) -> list[AttemptRecord]:
        """Ordered by task creation order, then attempt."""

    def recent_attempts(
        self, pipeline: str, runs: int = 10
    ) -> list[tuple[RunRecord, list[AttemptRecord]]]:
        """The newest ``runs`` runs of ``pipeline``, newest first (by created_at,
        then run_id), each with its attempts (task creation order, then attempt)."""

    def task_durations(self, pipeline: str, runs: int = 10) -> list[tuple[str, float]]:
        """``(task_id, seconds)`` of every task run that succeeded by running (no
        cache hit or fallback note) in the newest ``runs`` runs of ``pipeline``."""

    def attempts_between(
        self, since: float, until: float, pipeline: str | None = None
    ) -> list[tuple[RunRecord, list[AttemptRecord]]]:
        """The runs created in ``[since, until)``, only ``pipeline``'s when given,
        oldest first, each with its attempts (task creation order, then attempt)."""

    def task_run_stats(self, pipeline: str, since: float, limit: int = 10_000) -> list[TaskRunStat]:
        """The task runs of ``pipeline``'s runs created at or after ``since``, newest
        run first (by created_at, then run_id), each run's in task creation order; at
        most ``limit`` of them (the newest)."""

    def run_states(self, pipeline: str, since: float) -> dict[str, int]:
        """How many of ``pipeline``'s runs created at or after ``since`` are in each state."""

    def pipeline_names(self) -> list[str]:
        """The names of every stored pipeline, sorted."""

    def events(self, run_id: str) -> list[EventRecord]:
        """In commit order."""

    def events_after(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> list[tuple[int, list[EventRecord]]]:
        """The run's commits of events after commit id ``after``, oldest first, at most
        ``limit``: (commit id, its events in order) each. Ids only grow."""

    def outputs(self, run_id: str) -> dict[str, OutputRef]:
        """The stored output of every task of the run that has one (a succeeded task
        that returned None has one, though no row may hold it)."""

    def get_cache(self, key: str, now: float) -> CacheEntry | None:
        """The entry under ``key``, or ``None`` when there is none or it expired at ``now``."""

    def put_cache(self, entry: CacheEntry) -> None:
        """Insert the entry, replacing any under the same key."""

    def delete_expired_cache(self, now: float) -> int:
        """Delete every entry expired at ``now``; return how many were deleted."""

    def get_circuit(self, name: str) -> CircuitState | None:
        """The circuit's stored state, or ``None`` when it never recorded one."""

    def update_circuit(
        self, name: str, change: Callable[[CircuitState | None], CircuitState]
    ) -> CircuitState:
        """Read the circuit's state, store ``change(state)`` and return it, in one
        transaction no other writer can interleave (so two processes never both
        take the one half-open trial). Exceptions from ``change`` roll back."""

    def pools(self) -> list[PoolRecord]:
        """Every global pool, by name."""

    def set_pool(self, name: str, slots: int, now: float) -> None:
        """Create the pool or change its number of slots (holdings are kept: a smaller
        size takes effect as they are released)."""

    def seed_pools(self, slots: dict[str, int], now: float) -> None:
        """Create each pool that does not exist yet with its number of slots (pools
        from settings); existing pools keep theirs."""

    def remove_pool(self, name: str) -> bool:
        """Delete the pool and its holdings; False when there is no such pool."""

    def acquire_pool_slot(
        self, pool: str, run_id: str, task_id: str, attempt: int, lease_epoch: int, now: float
    ) -> bool:
        """Take one slot of ``pool`` for the attempt if fewer than its slots are held
        by live holdings; False (nothing changed) when full or the pool is gone.

        One transaction, serialised per pool (no read-then-write): holdings that are
        no longer live are deleted first — their run's lease expired at ``now``, its
        epoch moved past theirs (taken over) or it ended — so a slot held by a dead
        process comes back when its lease expires."""

    def release_pool_slot(self, pool: str, run_id: str, task_id: str) -> None:
        """Delete the holding (no-op when there is none)."""

    def pool_holdings(self, now: float, pool: str | None = None) -> list[PoolHolding]:
        """The live holdings at ``now`` (only ``pool``'s when given), by pool, then
        acquisition time."""

    def run_counts(self) -> list[tuple[str, str, int]]:
        """(pipeline, state, number of runs) for every pair that has runs."""

    def run_durations(self, bounds: Sequence[float]) -> list[tuple[str, int, float, list[int]]]:
        """Of every pipeline's ended runs: (pipeline, how many, their seconds summed,
        how many took at most each of ``bounds``)."""

    def activity(self, now: float) -> Activity:
        """What the queue and the workers are doing at ``now`` (``Activity``)."""

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        """Create ``schedule``, or change the one of that name (its ``last_tick`` and
        ``created_at`` stay)."""

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule ``name``; ``None`` when there is none."""

    def schedules(self, *, enabled_only: bool = False) -> list[ScheduleRecord]:
        """Every schedule (only the enabled ones), by name."""

    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule (its runs stay); False when there is none."""

    def set_schedule_enabled(self, name: str, enabled: bool, now: float) -> bool:
        """Enable (resume) or disable (pause) the schedule; False when there is none."""

    def due_schedules(self, now: float) -> list[ScheduleRecord]:
        """The enabled schedules whose next fire time is at ``now`` or before."""

    def next_fire_after(self, now: float) -> float | None:
        """The soonest next fire time of an enabled schedule after ``now``; ``None``: none."""

    def advance_schedule(self, name: str, tick: float, next_at: float | None) -> bool:
        """Move ``last_tick`` on to ``tick`` and the next fire time to ``next_at``, unless
        ``last_tick`` is there or beyond already."""

    def tick_run(self, schedule: str, logical_time: float) -> str | None:
        """The run that the schedule's tick at ``logical_time`` created; ``None``: none."""

    def tick_of_run(self, run_id: str) -> tuple[str, float, float] | None:
        """The tick that made run ``run_id``: (schedule, logical time, data interval
        start); ``None`` when a schedule's tick did not make it."""

    def schedule_runs(self, schedule: str, limit: int = 10) -> list[tuple[float, str]]:
        """The schedule's latest fired ticks: (logical time, run id), newest first."""

    def active_schedule_runs(self, schedule: str) -> int:
        """How many runs the schedule made are unfinished (queued, running, paused)."""

    def ended_runs_after(
        self, pipeline: str, states: Sequence[str], after: float, limit: int
    ) -> list[tuple[str, float]]:
        """The runs of ``pipeline`` that ended in one of ``states`` (end states: at most
        three) strictly after ``after``: (run id, ended at), oldest end first, at most
        ``limit`` (what an ``after`` schedule fires on)."""

    def retry_link(self, run_id: str) -> RetryLink | None:
        """Run ``run_id``'s place in a retry chain; ``None`` when it retries no run."""

    def retried_by(self, run_id: str) -> tuple[str, float] | None:
        """The run that retries ``run_id`` and when it is due; ``None``: none (yet)."""

    def failed_unretried(self, since: float, limit: int) -> list[RunRecord]:
        """Runs that ended ``failed`` after ``since`` and have no retry: oldest end first."""

    def started_schedule_runs(self) -> list[tuple[str, RunRecord]]:
        """(schedule, run) for every started, unfinished run (running, paused) that a
        schedule made (a tick or an object)."""

    def seen_objects(self, schedule: str) -> set[str]:
        """The object keys schedule ``schedule`` has recorded."""

    def record_objects(self, schedule: str, keys: Sequence[str], now: float) -> None:
        """Record ``keys`` as seen without a run (present when the schedule began)."""

    def object_of_run(self, run_id: str) -> tuple[str, str] | None:
        """(schedule, object URL) of the object that fired run ``run_id``; ``None``: none."""

    def add_notifications(self, rows: Sequence[NotificationRecord]) -> list[int]:
        """Record each delivery in ONE transaction unless its (key, channel index) is
        recorded already; return the ids of those recorded now (``id`` is ignored)."""

    def due_notifications(self, now: float, limit: int = 100) -> list[int]:
        """The deliveries due at ``now``: pending ones whose try is due, and claimed
        ones whose claim has run out (their claimer died); soonest first."""

    def claim_notification(
        self, notification_id: int, now: float, until: float
    ) -> NotificationRecord | None:
        """Claim the delivery if it is due at ``now`` (compare-and-set: of any number of
        claimers exactly one wins) until ``until``, counting one more attempt; the row
        as claimed, or ``None`` when it was not due or another claimer won."""

    def finish_notification(
        self,
        notification_id: int,
        attempts: int,
        *,
        state: str,
        error: str | None,
        next_try_at: float | None,
        now: float,
    ) -> bool:
        """End the claimed attempt number ``attempts``: ``delivered``, ``failed``, or
        ``pending`` again (due at ``next_try_at``); False when the claim was lost
        meanwhile (another claimer took it over: nothing is written)."""

    def notifications(
        self,
        *,
        run_id: str | None = None,
        state: str | None = None,
        owner: str | None = None,
        any_owner: bool = True,
        limit: int = 100,
    ) -> list[NotificationRecord]:
        """The deliveries matching every filter given, newest first (``any_owner``
        false: only those of ``owner``, ``None`` included)."""

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record ``worker`` (or replace the record of the same owner)."""

    def beat_worker(self, owner: str, now: float) -> bool:
        """The worker ``owner`` is alive at ``now``; False when it has no record."""

    def remove_worker(self, owner: str) -> None:
        """The worker ``owner`` stopped: its record goes (no-op when there is none)."""

    def workers(self, since: float) -> list[WorkerRecord]:
        """The workers whose last heartbeat is at ``since`` or later, by owner."""

    def requests_in_use(self) -> list[str]:
        """The resource requests (``request_json``) of the running attempts of
        unfinished runs."""

    def task_run_counts(self) -> list[tuple[str, str, int]]:
        """(pipeline, state, number of task runs) for every pair that has task runs."""

    def lease_takeovers(self) -> list[tuple[str, int]]:
        """(pipeline, how many times a lease of its runs was taken over) for every
        pipeline that had one."""

    def attempt_durations(
        self, bounds: Sequence[float], *, after: float | None = None, until: float | None = None
    ) -> list[Histogram]:
        """Ended attempts' seconds from start to end, by (pipeline, task id); not a
        mapped task's own attempt (it spans its elements, whose attempts count). Only
        attempts that ended after ``after`` (read through the runs that ended after it
        or have not ended: no scan of the store's history) and at ``until`` or before,
        when given."""

    def attempt_queue_waits(
        self, bounds: Sequence[float], *, after: float | None = None, until: float | None = None
    ) -> list[Histogram]:
        """Started attempts' seconds from ready to start, by (pipeline,); not a mapped
        task's own attempt. ``after``/``until`` bound the attempts' start, as
        ``attempt_durations`` bounds their end."""

    def claim_latencies(self, bounds: Sequence[float]) -> list[Histogram]:
        """Started runs' seconds from submission to start, by (pipeline,)."""

    def add_samples(self, samples: Sequence[MetricSample]) -> int:
        """Insert ``samples``, keeping one already stored under the same (name, at,
        host, labels); how many were new."""

    def metric_samples(
        self, names: Sequence[str], since: float, until: float, limit: int = 1_000_000
    ) -> list[MetricSample]:
        """The samples of ``names`` (every name when empty) with ``since <= at <=
        until``, by time, then name, host and labels; at most ``limit``."""

    def latest_samples(self, since: float) -> list[MetricSample]:
        """The newest sample of each series (name, host, labels) sampled at or after
        ``since``, by name, host and labels."""

    def delete_samples_before(self, before: float) -> int:
        """Delete the samples with ``at < before``; how many went."""

    def sample_names(self) -> list[str]:
        """The names that have samples, sorted."""

    def add_token(self, token: TokenRecord) -> None:
        """Store a new token; the driver's integrity error when its id or name exists."""

    def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with that public id, revoked or not; ``None`` when there is none."""

    def tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""

    def revoke_token(self, name: str, now: float) -> bool:
        """Revoke the live token named ``name``; False when there is none."""

    def touch_token(self, token_id: str, now: float) -> None:
        """Record that the token was used at ``now``."""

    def add_audit(self, entry: AuditEntry) -> int:
        """Append ``entry`` to the audit log; return its id."""

    def audit_entries(
        self,
        *,
        since: float | None = None,
        actor: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The audit log, newest first, matching every filter given; ``before_id``: the
        page starts after that entry."""

    def add_request(self, request: ControlRequest) -> int:
        """Store a control request; return its ``request_id``. Raises ``RunNotFound``."""

    def requests(self, run_id: str, after: int = 0) -> list[ControlRequest]:
        """The run's control requests with ``request_id > after``, oldest first."""

    def put_alert_rule(self, rule: AlertRuleRecord) -> None:
        """Insert or replace the rule ``rule.rule_id`` (its creation time stays)."""

    def get_alert_rule(self, rule_id: str) -> AlertRuleRecord | None: ...

    def alert_rules(
        self, *, enabled_only: bool = False, pipeline: str | None = None
    ) -> list[AlertRuleRecord]:
        """By rule id; only ``pipeline``'s when given."""

    def delete_alert_rule(self, rule_id: str) -> bool: ...

    def set_alert_rule_enabled(self, rule_id: str, enabled: bool, now: float) -> bool: ...

    def open_alert(self, alert: AlertRecord) -> bool:
        """Insert ``alert`` (state open) unless its rule has an active one for its subject
        or its ``dedup_key`` is taken: one insert, so of racing processes exactly one
        opens it. Whether this call did."""

    def active_alert(self, rule_id: str, subject: str) -> AlertRecord | None:
        """The rule's open or acknowledged alert for ``subject``, if any."""

    def last_alert_opened(self, rule_id: str, subject: str) -> float | None:
        """When the rule's latest alert for ``subject`` (any state) opened."""

    def get_alert(self, alert_id: str) -> AlertRecord | None: ...

    def alerts(
        self,
        *,
        state: str | None = None,
        severity: str | None = None,
        rule_id: str | None = None,
        limit: int = 100,
    ) -> list[AlertRecord]:
        """Newest opened first, filtered by each argument given."""

    def move_alert(
        self, alert_id: str, from_state: str, to_state: str, *, by: str, now: float
    ) -> bool:
        """Compare-and-set ``from_state`` -> ``to_state`` (acknowledged: records who and
        when; resolved: likewise); false when the alert was not in ``from_state``."""

    def close(self, *, wait: bool = True) -> None: ...
