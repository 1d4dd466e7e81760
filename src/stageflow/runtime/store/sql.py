"""The metadata store on SQLite or PostgreSQL, through the DB-API.

One class, :class:`SqlStore`, serves both databases; its :class:`Dialect`
supplies the differences (``dialect.py``).  Policy and state:

- The connection is in autocommit mode; every write is one explicit transaction
  (``BEGIN`` ... ``COMMIT``), rolled back and re-raised on any exception, so a
  ``Batch`` is applied whole or not at all (DESIGN.md, durability rule).
- ``commit`` is the runner's hot path (one call per scheduling tick): its SQL is
  translated once per dialect (``_Statements``), rows go through ``executemany``
  as plain tuples, and rows are upserts (``INSERT ... ON CONFLICT DO UPDATE``),
  so the runner never asks whether a row exists.
- A ``RunUpdate`` changes only the fields it sets: ``COALESCE(new, column)``.
- Leases (``engine.lease``): ``claim_run`` is ONE conditional ``UPDATE ... WHERE
  lease_epoch = <the epoch the claimer read>``, so of simultaneous claimers exactly
  one changes the row. ``claim_next`` (a worker) picks the first claimable run and
  claims it in the same transaction: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
  concurrent claimers each lock a different run and never wait on one another;
  ``BEGIN IMMEDIATE`` on SQLite. ``commit`` first renews the lease of every fenced run with
  ``UPDATE ... WHERE lease_epoch = <its epoch>`` in the same transaction; a row not
  changed means the run was taken over: roll back, ``LeaseLost``. On PostgreSQL that
  update holds the run's row lock until the commit, so a concurrent claim waits for
  it and then finds the epoch it read unchanged (it wins) or not (it fails); SQLite
  has one writer at a time (``BEGIN IMMEDIATE``).
- An attempt row replaces its state, times and error, but its scheduling and
  usage fields (``queued_at``, ``request_json``, ``gpu_devices``, ``cpu_seconds``,
  ``peak_rss_mb``, ``gpu_seconds``) keep what an earlier row set when a later one
  leaves them ``None`` (the running row carries the queue time and request, the
  final one the measurements): ``COALESCE(new, column)`` across commits, the same
  merge among the rows of one batch.
- ``seq`` of a task run is its creation order: its index in ``create_run``, or
  one past the run's largest when ``commit`` upserts a task run not seen before.
- A store is used from one thread at a time; a lock guards the connection
  anyway, as it costs well under a microsecond.
- A driver error that the store's surroundings caused (a full or failing disk,
  a damaged file, a lost server: ``Dialect.trouble``) is raised as a
  ``StoreError`` that says what to do; any other driver error is re-raised as is.
  A PostgreSQL connection that broke (the server restarted, a network cut, an
  administrator ended it) is raised as ``StoreUnreachable`` and reopened by the next
  call (``reopen``), so a caller that retries (the committer, a worker's poll) goes
  on once the server answers again; nothing is retried here.

Timestamps are float epoch seconds; params are stored as JSON text.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

from stageflow.errors import (
    LeaseLost,
    RunIdTaken,
    RunNotFound,
    RunOwned,
    StoreError,
    StoreUnreachable,
)
from stageflow.runtime.store.base import (
    RAN_NOTES,
    Activity,
    AttemptRecord,
    Batch,
    CacheEntry,
    ControlRequest,
    EventRecord,
    OutputRef,
    PipelineRecord,
    PoolHolding,
    PoolRecord,
    RetryLink,
    RunRecord,
    TaskRunRecord,
    TaskRunStat,
    Tick,
    VersionCount,
)
from stageflow.runtime.store.dialect import Connection, Cursor, Dialect
from stageflow.runtime.store.sql_access import AccessTables
from stageflow.runtime.store.sql_alerts import AlertTables
from stageflow.runtime.store.sql_metrics import MetricsTables
from stageflow.runtime.store.sql_notifications import NotificationTables
from stageflow.runtime.store.sql_run_retries import RunRetryTables
from stageflow.runtime.store.sql_samples import SampleTables
from stageflow.runtime.store.sql_schedules import ScheduleTables

if TYPE_CHECKING:
    from stageflow.engine.circuit import CircuitState

__all__ = ["SqlStore"]


class SqlStore(
    AlertTables,
    AccessTables,
    MetricsTables,
    NotificationTables,
    SampleTables,
    ScheduleTables,
    RunRetryTables,
):
    """The ``Store`` on an open DB-API connection; see the module docstring.

    ``url`` is the store's URL with any password masked: safe to print.
    Build one with :func:`stageflow.runtime.store.open_store`, which also migrates.
    """

    def __init__(
        self,
        conn: Connection,
        dialect: Dialect,
        *,
        url: str,
        reopen: Callable[[], Connection] | None = None,
    ) -> None:
        self.url = url
        self.dialect = dialect
        self._conn = conn
        self._cur: Cursor = conn.cursor()
        # A server's connection that broke (``StoreUnreachable``) is reopened by the
        # next call through ``reopen``; None: never (SQLite has no connection to lose).
        self._reopen = reopen
        self._lost = False
        self._lock = threading.Lock()
        self._sql = _statements(dialect)
        self._begin = dialect.begin
        self._closed = False
        self._driver_error = dialect.driver_error()

    # -- writes ---------------------------------------------------------------

    def save_pipeline(self, record: PipelineRecord) -> None:
        """Insert the pipeline version if absent (idempotent on name+version)."""
        with self._transaction() as cur:
            cur.execute(self._sql.insert_pipeline, _pipeline_row(record))

    def publish_pipeline(self, record: PipelineRecord) -> bool:
        """Insert the version, or bring back a deleted one as the newest (the
        service's save); True when it was new or deleted."""
        with self._transaction() as cur:
            cur.execute(self._sql.publish_pipeline, _pipeline_row(record))
            return bool(cur.rowcount)

    def requeue_run(
        self,
        run_id: str,
        from_state: str,
        reset: Sequence[str],
        events: Sequence[EventRecord],
        now: float,
    ) -> bool:
        """Put an ended run back in the queue for a worker to resume (the service's
        ``retry``), in one transaction, if it is still ``from_state`` (a compare-and-set):
        the run ``running`` with no lease (a new epoch), the ``reset`` task runs
        ``pending``, and ``events``. False (nothing changed) when its state moved on."""
        with self._transaction() as cur:
            cur.execute(self._sql.requeue_run, (now, run_id, from_state))
            if cur.rowcount != 1:
                return False
            if reset:
                cur.execute(
                    self._sql.reset_task_runs, (run_id, self.dialect.text_list(list(reset)))
                )
            if events:
                self._many(cur, _INSERT_EVENTS, _event_batches(events))
            return True

    def delete_pipeline(self, name: str, now: float) -> bool:
        """Mark every live version of ``name`` deleted; False when there is none."""
        with self._transaction() as cur:
            cur.execute(self._sql.delete_pipeline, (now, name))
            return bool(cur.rowcount)

    def pipeline_owner(self, name: str) -> tuple[bool, str | None]:
        """(whether ``name`` has any version, deleted or not; its newest version's owner)."""
        row = self._fetchone(self._sql.select_pipeline_owner, (name,))
        return (False, None) if row is None else (True, row[0])

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
        """Insert the run and one ``pending`` task run per id (seq = index), and
        ``pipeline``'s version if absent (as ``save_pipeline``), in one transaction.

        ``tick``: (schedule, logical time) that fires the run, recorded with it;
        ``retry``: the failed run it retries, ``schedule_object``: the object that fires
        it (``RunRetryTables``: ``RetryTaken``/``TickTaken`` when taken already).

        Raises ``RunIdTaken`` when the run_id exists and ``TickTaken`` when the tick
        made a run already (nothing is written either way), the driver's integrity
        error when a task id repeats.
        """
        with self._transaction() as cur:
            self._insert_run(
                cur,
                run,
                task_ids,
                pipeline=pipeline,
                tick=tick,
                retry=retry,
                schedule_object=schedule_object,
            )

    def _insert_run(
        self,
        cur: Cursor,
        run: RunRecord,
        task_ids: Sequence[str],
        *,
        pipeline: PipelineRecord | None = None,
        tick: Tick | None = None,
        retry: RetryLink | None = None,
        schedule_object: tuple[str, str] | None = None,
    ) -> None:
        """``create_run``'s writes, in the caller's transaction (``RunIdTaken``,
        ``TickTaken``: the caller rolls back)."""
        if pipeline is not None:
            self._insert_pipeline(cur, pipeline)
        if not self._insert_run_row(cur, run):  # rolls the pipeline's version back with it
            raise RunIdTaken(f"run id '{run.run_id}' is taken; draw another")
        if tick is not None:
            self._record_tick(cur, tick, run.run_id)
        if retry is not None:
            self._record_retry(cur, retry, run.run_id, run.created_at)
        if schedule_object is not None:
            self._record_object(cur, schedule_object, run.run_id, run.created_at)
        if task_ids:
            dialect = self.dialect
            cur.execute(
                dialect.insert_pending_bulk, (run.run_id, dialect.text_list(list(task_ids)))
            )

    def _insert_pipeline(self, cur: Cursor, pipeline: PipelineRecord) -> None:
        """Save ``pipeline``'s version if absent, in the caller's transaction."""
        cur.execute(self._sql.insert_pipeline, _pipeline_row(pipeline))

    def _insert_run_row(self, cur: Cursor, run: RunRecord) -> bool:
        """Insert ``run``'s row in the caller's transaction; False (nothing written) when
        its id is taken."""
        row = (
            run.run_id,
            run.pipeline,
            run.pipeline_version,
            run.state,
            json.dumps(run.params),
            run.created_at,
            run.started_at,
            run.ended_at,
            run.owner_host,
            run.owner_pid,
            run.owner_started_at,
            run.heartbeat_at,
            run.executor,
            run.source,
            run.lease_owner,
            run.lease_epoch,
            run.lease_expires_at,
            run.priority,
            run.owner,
            run.triggered_by,
        )
        cur.execute(self._sql.insert_run, row)
        return bool(cur.rowcount)

    def commit(self, batch: Batch) -> None:
        """Apply a whole batch in one transaction; on any error roll back and re-raise.

        Raises ``RunNotFound`` when a ``RunUpdate`` names a run not in the store, and
        ``LeaseLost`` (nothing applied) when a fenced run's lease epoch moved on.
        """
        if not batch:
            return
        sql = self._sql
        with self._lock:
            cur = self._cursor()
            self._start(cur)
            try:
                # First, so that on PostgreSQL the run's row is locked against a
                # concurrent claim for the rest of the transaction.
                for run_id, fence in batch.fences.items():
                    cur.execute(
                        sql.renew_lease,
                        (fence.expires_at, fence.renewed_at, run_id, fence.epoch),
                    )
                    if cur.rowcount == 0:
                        raise self._lease_lost(cur, run_id, fence.epoch)
                if batch.runs:
                    updates = [
                        (u.state, u.started_at, u.ended_at, u.heartbeat_at, u.run_id)
                        for u in batch.runs
                    ]
                    cur.executemany(sql.update_run, updates)
                    if 0 <= cur.rowcount < len(updates):
                        self._raise_missing_run(cur, [u[-1] for u in updates])
                if batch.task_runs:
                    latest = {(t.run_id, t.task_id): t for t in batch.task_runs}
                    # A task run first seen here gets seq = MAX(seq) + 1 + k, so several
                    # new ones in one statement get distinct, rising seqs; an existing
                    # one keeps its seq (the upsert does not set it). One MAX per run,
                    # not a subquery per row.
                    next_seq: dict[str, int] = {}
                    for run_id, _ in latest:
                        if run_id not in next_seq:
                            cur.execute(sql.next_seq, (run_id,))
                            next_seq[run_id] = int(cur.fetchone()[0])
                    self._many(
                        cur,
                        _UPSERT_TASK_RUN,
                        [
                            (
                                t.run_id,
                                t.task_id,
                                next_seq[t.run_id] + k,
                                t.state,
                                t.attempts,
                                t.started_at,
                                t.ended_at,
                                t.error,
                                t.note,
                            )
                            for k, t in enumerate(latest.values())
                        ],
                    )
                # Attempts, events and outputs are named tuples in column order.
                if batch.attempts:
                    self._many(cur, _UPSERT_ATTEMPT, _merged_attempts(batch.attempts))
                if batch.events:
                    self._many(cur, _INSERT_EVENTS, _event_batches(batch.events))
                if batch.outputs:
                    outputs = {(o.run_id, o.task_id): o for o in batch.outputs}
                    # A None output is no row: a success without one reads back as
                    # None (``outputs``). Any row of an earlier success goes
                    # (``retry --from`` re-ran the task).
                    stored = [o for o in outputs.values() if o.serializer != _NONE]
                    if len(stored) < len(outputs):
                        self._many(
                            cur,
                            _DELETE_OUTPUT,
                            [k for k, o in outputs.items() if o.serializer == _NONE],
                        )
                    if stored:
                        self._many(cur, _UPSERT_OUTPUT, stored)
                if batch.cache:
                    entries = {e.key: e for e in batch.cache}
                    self._many(cur, _UPSERT_CACHE, [_cache_row(e) for e in entries.values()])
                if batch.records:
                    records = {r.run_id: r for r in batch.records}
                    self._many(cur, _UPSERT_RECORD, list(records.values()))
                cur.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                self._raise_trouble(exc)
                raise

    def _many(self, cur: Any, statement: _MultiRow, rows: Sequence[tuple[Any, ...]]) -> None:
        """Write ``rows`` with multi-row statements (one per chunk of rows).

        Rows in one batch are written by a few statements instead of one each:
        far fewer round trips (PostgreSQL) and interpreter-lock hand-offs
        (SQLite's driver releases it around every statement), which keeps a
        commit from stalling the run loop's other threads.
        """
        start, left = 0, len(rows)
        while left:
            # Chunks of a power of two rows: a handful of distinct statements that
            # the driver keeps prepared, instead of a new text (a parse) per size.
            size = min(_CHUNK_ROWS, 1 << (left.bit_length() - 1))
            chunk = rows[start : start + size]
            cur.execute(_multi_row_sql(self.dialect, statement, size), list(_flat(chunk)))
            start += size
            left -= size

    def put_cache(self, entry: CacheEntry) -> None:
        """Insert the entry, replacing any under the same key."""
        with self._transaction() as cur:
            self._many(cur, _UPSERT_CACHE, [_cache_row(entry)])

    def delete_expired_cache(self, now: float) -> int:
        """Delete every entry expired at ``now``; return how many were deleted."""
        with self._transaction() as cur:
            cur.execute(self._sql.delete_expired_cache, (now,))
            return max(cur.rowcount, 0)

    def update_circuit(
        self, name: str, change: Callable[[CircuitState | None], CircuitState]
    ) -> CircuitState:
        """Read, change and write one circuit's state in one transaction.

        SQLite: ``BEGIN IMMEDIATE`` already holds the database's write lock.
        PostgreSQL: the row is created if absent, then locked (``FOR UPDATE``), so
        a concurrent updater waits for this transaction and then sees its result.
        """
        with self._transaction() as cur:
            if self.dialect.name == "postgresql":
                cur.execute(self._sql.insert_circuit_if_absent, (name,))
            cur.execute(self._sql.select_circuit_for_update, (name,))
            row = cur.fetchone()
            # A row created just now only to be locked reads as "no state yet".
            current = None if row is None or row[5] is None else _circuit_state(row)
            new = change(current)
            cur.execute(
                self._sql.upsert_circuit,
                (
                    name,
                    new.state,
                    new.failures,
                    new.opened_until,
                    new.trial_started,
                    new.updated_at,
                ),
            )
            return new

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
        """Take the run's lease if its epoch is still ``expected_epoch``; return the new
        epoch (``expected_epoch + 1``).

        One conditional ``UPDATE`` (module docstring): of claimers that read the same
        epoch exactly one succeeds. Raises ``RunOwned`` naming the run's owner when the
        epoch moved on, ``RunNotFound`` when the run is not in the store.
        """
        row = (owner, now + ttl, host, pid, started_at, now, run_id, expected_epoch)
        with self._transaction() as cur:
            cur.execute(self._sql.claim_run, row)
            if cur.rowcount == 1:
                return expected_epoch + 1
            cur.execute(self._sql.select_run, (run_id,))
            found = cur.fetchone()
        if found is None:
            raise self._run_not_found(run_id)
        run = _run_record(found)
        raise RunOwned(
            f"run '{run_id}' was claimed by {run.lease_owner} (lease epoch {run.lease_epoch}) "
            f"before this process could take it; wait for it to finish or stop it first "
            f"(`stageflow runs show {run_id}`)",
            owner=run.lease_owner,
        )

    def renew_lease(self, run_id: str, epoch: int, now: float, ttl: float) -> bool:
        """Extend the run's lease to ``now + ttl`` (and its heartbeat to ``now``) if its
        epoch is still ``epoch``; False when it is not (or the run is not in the store)."""
        with self._transaction() as cur:
            cur.execute(self._sql.renew_lease, (now + ttl, now, run_id, epoch))
            return cur.rowcount == 1

    def release_lease(self, run_id: str, epoch: int, now: float) -> bool:
        """Hand the run back to the queue: if its epoch is still ``epoch``, move the
        epoch on (so the releasing process's later commits are refused, fencing) and
        let the lease expire ``now``, so any worker may take the run over at once.
        False when another process took it meanwhile (nothing changed)."""
        with self._transaction() as cur:
            cur.execute(self._sql.release_lease, (now, run_id, epoch))
            return cur.rowcount == 1

    def claimable_runs(self, now: float, limit: int) -> list[RunRecord]:
        """Runs a worker may claim at ``now``, in queue order (``priority`` high
        first, then oldest): ``queued`` runs nobody holds, and ``queued``/``running``
        runs whose lease expired (their owner went silent: a takeover). A read only:
        claiming is ``claim_run``'s compare-and-set."""
        return [
            _run_record(row) for row in self._fetchall(self._sql.claimable_runs, (now, now, limit))
        ]

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
        """Pick the first claimable run in queue order (as ``claimable_runs``), not in
        ``exclude``, and take its lease, in ONE transaction; ``None`` when there is none.

        Returns the run as it stood in the queue (its previous lease says whom it was
        taken from) and the new epoch; the run's row now holds ``owner``'s lease until
        ``now + ttl``. PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1`` (a run
        another claimer or a committing owner has locked is passed over, never waited
        for), then the compare-and-set; SQLite: both inside ``BEGIN IMMEDIATE`` (one
        writer at a time), after the same selection as a plain read finds a run (an
        empty queue never takes the write lock). ``started_at``: the owner process's
        start time (``owner_*``).
        """
        excluded = list(exclude)
        pick = self._sql.claim_next_pg if self.dialect.name == "postgresql" else None
        if pick is None:
            params: tuple[Any, ...] = (now, now, self.dialect.text_list(excluded))
            # An idle poll (a worker polls 20 times a second) reads without the write
            # lock: BEGIN IMMEDIATE only when there is a run to claim.
            if self._fetchone(self._sql.claim_next_sqlite, params) is None:
                return None
        with self._transaction() as cur:
            if pick is not None:
                cur.execute(pick, (now, now, excluded))
            else:
                cur.execute(self._sql.claim_next_sqlite, params)
            found = cur.fetchone()
            if found is None:
                return None
            run = _run_record(found)
            cur.execute(
                self._sql.claim_run,
                (owner, now + ttl, host, pid, started_at, now, run.run_id, run.lease_epoch),
            )
            if cur.rowcount != 1:  # cannot happen: the row is locked (or the file is)
                raise RuntimeError(f"run {run.run_id}: its row changed while locked")
        return run, run.lease_epoch + 1

    # -- global pools (runtime.pools) -------------------------------------------

    def pools(self) -> list[PoolRecord]:
        """Every global pool, by name."""
        rows = self._fetchall(_pool_statements(self.dialect).select_pools, ())
        return [PoolRecord(str(r[0]), int(r[1]), float(r[2])) for r in rows]

    def set_pool(self, name: str, slots: int, now: float) -> None:
        """Create the pool or change its number of slots."""
        with self._transaction() as cur:
            cur.execute(_pool_statements(self.dialect).upsert_pool, (name, slots, now))

    def seed_pools(self, slots: dict[str, int], now: float) -> None:
        """Create each pool not in the store yet; existing pools keep their size."""
        if not slots:
            return
        rows = [(name, count, now) for name, count in sorted(slots.items())]
        with self._transaction() as cur:
            cur.executemany(_pool_statements(self.dialect).insert_pool_if_absent, rows)

    def remove_pool(self, name: str) -> bool:
        """Delete the pool and its holdings (``pool_slots.pool`` cascades: ``ON DELETE
        CASCADE``, with SQLite's ``foreign_keys`` on); False when there is no such pool."""
        with self._transaction() as cur:
            cur.execute(_pool_statements(self.dialect).delete_pool, (name,))
            return cur.rowcount == 1

    def acquire_pool_slot(
        self, pool: str, run_id: str, task_id: str, attempt: int, lease_epoch: int, now: float
    ) -> bool:
        """Take one slot of ``pool`` if fewer than its slots are held by live holdings.

        One transaction, serialised per pool: PostgreSQL locks the pool's row
        (``FOR UPDATE``), so a concurrent acquirer waits and then counts this one's
        holding (each statement reads what was committed before it began); SQLite's
        ``BEGIN IMMEDIATE`` holds the write lock. Dead holdings (run's lease expired
        at ``now``, epoch moved past theirs, run final) and this task's own earlier
        holding are deleted, then ONE conditional insert takes the slot only if the
        count is below the size. False when full or the pool does not exist."""
        sql = _pool_statements(self.dialect)
        with self._transaction() as cur:
            cur.execute(sql.lock_pool, (pool,))
            if cur.fetchone() is None:
                return False
            cur.execute(sql.delete_dead_holdings, (pool, now))
            cur.execute(sql.delete_own_holding, (pool, run_id, task_id))
            cur.execute(
                sql.insert_holding_if_free,
                (pool, run_id, task_id, attempt, lease_epoch, now, pool),
            )
            return cur.rowcount == 1

    def release_pool_slot(self, pool: str, run_id: str, task_id: str) -> None:
        """Delete the holding (no-op when there is none)."""
        with self._transaction() as cur:
            cur.execute(_pool_statements(self.dialect).delete_own_holding, (pool, run_id, task_id))

    def pool_holdings(self, now: float, pool: str | None = None) -> list[PoolHolding]:
        """The live holdings at ``now`` (only ``pool``'s when given), by pool, then
        acquisition time."""
        sql = _pool_statements(self.dialect)
        if pool is None:
            rows = self._fetchall(sql.select_live_holdings, (now,))
        else:
            rows = self._fetchall(sql.select_live_holdings_of_pool, (now, pool))
        return [
            PoolHolding(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), float(r[5]))
            for r in rows
        ]

    # -- reads ----------------------------------------------------------------

    def get_pipeline(self, name: str, version: str) -> PipelineRecord:
        """Raise ``StoreError`` when absent."""
        row = self._fetchone(self._sql.select_pipeline, (name, version))
        if row is None:
            raise StoreError(
                f"no pipeline '{name}' version '{version}' in the store at {self.url}; "
                f"a pipeline version is saved when a run of it is created",
                pipeline=name,
            )
        return PipelineRecord(*row)

    def latest_pipeline(self, name: str) -> PipelineRecord:
        """The most recently saved version of pipeline ``name``; ``StoreError`` when none."""
        row = self._fetchone(self._sql.select_latest_pipeline, (name,))
        if row is None:
            raise StoreError(
                f"no pipeline '{name}' in the store at {self.url}; a pipeline is saved when "
                "a run of it is created (`stageflow run FILE`)",
                pipeline=name,
            )
        return PipelineRecord(*row)

    def get_run(self, run_id: str) -> RunRecord:
        """Raise ``RunNotFound`` (naming the run_id and ``stageflow runs list``) when absent."""
        row = self._fetchone(self._sql.select_run, (run_id,))
        if row is None:
            raise self._run_not_found(run_id)
        return _run_record(row)

    def list_runs(self, *, limit: int = 100, pipeline: str | None = None) -> list[RunRecord]:
        """Newest first (by created_at, then run_id)."""
        return self.query_runs(pipeline=pipeline, limit=limit)

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
        """The runs matching every filter given, newest first (created_at, then run_id,
        descending); ``before``: the (created_at, run_id) a page starts after. One
        query on index ``runs_by_pipeline``, ``runs_by_owner`` or ``runs_by_created_at``."""
        params: list[Any] = []
        if pipeline is not None:
            params.append(pipeline)
        params.extend(states)
        params.extend(t for t in (since, until) if t is not None)
        params.extend(t for t in (owner, triggered_by) if t is not None)
        if before is not None:
            params.extend((before[0], before[0], before[1]))
        sql = _query_runs_sql(
            self.dialect,
            pipeline is not None,
            len(states),
            since is not None,
            until is not None,
            before is not None,
            owner is not None,
            triggered_by is not None,
            unowned,
        )
        return [_run_record(row) for row in self._fetchall(sql, (*params, limit))]

    def started_runs(self) -> list[RunRecord]:
        """The running and paused runs, oldest first: on the partial index ``runs_started``
        (its WHERE clause, literally), so the background duties that read them each
        second cost nothing however many runs are queued or finished."""
        sql = _SELECT_RUN + "WHERE state IN ('running', 'paused') ORDER BY started_at, run_id"
        return [_run_record(row) for row in self._fetchall(self.dialect.sql(sql), ())]

    def pipeline_versions(self, name: str | None = None) -> list[VersionCount]:
        """Every saved version (of ``name`` when given) with its run count and newest run;
        one query."""
        if name is None:
            rows = self._fetchall(self._sql.select_versions, ())
        else:
            rows = self._fetchall(self._sql.select_versions_of, (name,))
        return [VersionCount(str(r[0]), str(r[1]), r[2], int(r[3]), r[4], r[5]) for r in rows]

    def task_runs(self, run_id: str) -> list[TaskRunRecord]:
        """In the order the task runs were created; empty for an unknown run."""
        return [
            TaskRunRecord(*row) for row in self._fetchall(self._sql.select_task_runs, (run_id,))
        ]

    def attempts(self, run_id: str, task_id: str | None = None) -> list[AttemptRecord]:
        """Ordered by task creation order, then attempt."""
        if task_id is None:
            rows = self._fetchall(self._sql.select_attempts, (run_id,))
        else:
            rows = self._fetchall(self._sql.select_task_attempts, (run_id, task_id))
        return [AttemptRecord(*row) for row in rows]

    def recent_attempts(
        self, pipeline: str, runs: int = 10
    ) -> list[tuple[RunRecord, list[AttemptRecord]]]:
        """The newest ``runs`` runs of ``pipeline`` (newest first), each with its
        attempts in task creation order; one query (index ``runs_by_pipeline``,
        then the attempts' and task runs' primary keys)."""
        return _group_by_run(self._fetchall(self._sql.select_recent_attempts, (pipeline, runs)))

    def task_durations(self, pipeline: str, runs: int = 10) -> list[tuple[str, float]]:
        """``(task_id, seconds)`` of the successful, really run task runs of the newest
        ``runs`` runs of ``pipeline``: one query, two narrow columns (run start cost)."""
        return [
            (row[0], float(row[1]))
            for row in self._fetchall(self._sql.select_task_durations, (pipeline, runs))
        ]

    def attempts_between(
        self, since: float, until: float, pipeline: str | None = None
    ) -> list[tuple[RunRecord, list[AttemptRecord]]]:
        """The runs created in ``[since, until)`` (of ``pipeline`` when given),
        oldest first, each with its attempts in task creation order; one query
        (index ``runs_by_created_at`` or ``runs_by_pipeline``)."""
        if pipeline is None:
            rows = self._fetchall(self._sql.select_attempts_between, (since, until))
        else:
            rows = self._fetchall(
                self._sql.select_pipeline_attempts_between, (pipeline, since, until)
            )
        return _group_by_run(rows)

    def task_run_stats(self, pipeline: str, since: float, limit: int = 10_000) -> list[TaskRunStat]:
        """The newest ``limit`` task runs of ``pipeline``'s runs created since ``since``,
        with their last attempts' times; one query (index ``runs_by_pipeline``, then the
        task runs' and attempts' primary keys). Every run has a task run, so at most
        ``limit`` runs are read."""
        rows = self._fetchall(self._sql.select_task_run_stats, (pipeline, since, limit, limit))
        return [TaskRunStat(*row) for row in rows]

    def run_states(self, pipeline: str, since: float) -> dict[str, int]:
        """Runs of ``pipeline`` created since ``since``, counted by state; one query."""
        rows = self._fetchall(self._sql.count_run_states, (pipeline, since))
        return {str(state): int(count) for state, count in rows}

    def run_counts(self) -> list[tuple[str, str, int]]:
        """(pipeline, state, number of runs) for every pair that has runs; one query."""
        rows = self._fetchall(self._sql.count_runs, ())
        return [(str(p), str(s), int(n)) for p, s, n in rows]

    def activity(self, now: float) -> Activity:
        """What the queue and the workers are doing at ``now`` (``Activity``): the task
        runs of unfinished runs by state, the oldest queued run's creation, the unfinished
        runs whose lease expired. Three queries, each on an index of unfinished runs."""
        tasks = {str(s): int(n) for s, n in self._fetchall(self._sql.count_active_tasks, ())}
        oldest = self._fetchone(self._sql.oldest_queued, ())
        expired = self._fetchone(self._sql.count_expired_leases, (now,))
        return Activity(tasks, oldest[0] if oldest else None, int(expired[0]) if expired else 0)

    def run_durations(self, bounds: Sequence[float]) -> list[tuple[str, int, float, list[int]]]:
        """Of every pipeline's ended runs: (pipeline, how many, their seconds summed, how
        many took at most each of ``bounds``); one query over the runs table."""
        sql = _run_durations_sql(self.dialect, len(bounds))
        return [
            (str(row[0]), int(row[1]), float(row[2] or 0.0), [int(n or 0) for n in row[3:]])
            for row in self._fetchall(sql, tuple(bounds))
        ]

    def pipeline_names(self) -> list[str]:
        """The names of every stored pipeline, sorted."""
        return [str(row[0]) for row in self._fetchall(self._sql.select_pipeline_names, ())]

    def events(self, run_id: str) -> list[EventRecord]:
        """In commit order."""
        return [
            EventRecord(run_id, *event)
            for (body,) in self._fetchall(self._sql.select_events, (run_id,))
            for event in json.loads(body)
        ]

    def events_after(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> list[tuple[int, list[EventRecord]]]:
        """The run's commits of events after commit ``after`` (its id), oldest first, at
        most ``limit``: (commit id, its events in order) each."""
        rows = self._fetchall(self._sql.select_events_after, (run_id, after, limit))
        return [
            (int(batch_id), [EventRecord(run_id, *event) for event in json.loads(body)])
            for batch_id, body in rows
        ]

    def outputs(self, run_id: str) -> dict[str, OutputRef]:
        """The stored output of every task of the run that has one, in task creation
        order; a succeeded task without a row returned None (``commit`` writes none)."""
        rows = self._fetchall(self._sql.select_outputs, (run_id,))
        return {row[1]: _output_ref(row) for row in rows}

    def get_cache(self, key: str, now: float) -> CacheEntry | None:
        """The entry under ``key``, or ``None`` when there is none or it expired at ``now``."""
        row = self._fetchone(self._sql.select_cache, (key,))
        if row is None or (row[11] is not None and row[11] <= now):
            return None
        return CacheEntry(row[0], row[1], _output_ref(row[2:10]), row[10], row[11])

    def get_circuit(self, name: str) -> CircuitState | None:
        """The circuit's stored state, or ``None`` when it never recorded one."""
        row = self._fetchone(self._sql.select_circuit, (name,))
        return None if row is None or row[5] is None else _circuit_state(row)

    # -- control requests (runtime.control) ----------------------------------

    def add_request(self, request: ControlRequest) -> int:
        """Store a control request; return its ``request_id``.

        Raises ``RunNotFound`` when the run is not in the store.
        """
        row = (
            request.run_id,
            request.request,
            request.task_id,
            request.requested_at,
            request.requested_by,
            request.comment,
        )
        with self._transaction() as cur:
            cur.execute(self._sql.select_run, (request.run_id,))
            if cur.fetchone() is None:
                raise self._run_not_found(request.run_id)
            cur.execute(self.dialect.sql(_INSERT_REQUEST), row)
            return int(cur.fetchone()[0])

    def requests(self, run_id: str, after: int = 0) -> list[ControlRequest]:
        """The run's control requests with ``request_id > after``, oldest first."""
        rows = self._fetchall(self.dialect.sql(_SELECT_REQUESTS), (run_id, after))
        return [
            ControlRequest(
                run_id=row[0],
                request=row[1],
                task_id=row[2],
                requested_at=row[3],
                requested_by=row[4],
                comment=row[5],
                request_id=row[6],
            )
            for row in rows
        ]

    # -- lifetime -------------------------------------------------------------

    def close(self, *, wait: bool = True) -> None:
        """Close the connection; closing twice is harmless.

        ``wait=False``: return at once and close on a (non-daemon) thread. Closing
        the last connection to a SQLite file checkpoints its write-ahead log into
        the database (milliseconds); everything committed is durable before that
        (it is in the log), so a run need not wait for it. The interpreter waits
        for the thread before it exits.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if wait:
                self._conn.close()
                return
        threading.Thread(target=self._conn.close, name="stageflow-store-close").start()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    # -- helpers --------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self._lock:
            cur = self._cursor()
            self._start(cur)
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                self._raise_trouble(exc)
                raise

    def _start(self, cur: Cursor) -> None:
        """Begin a write transaction (where a locked or read-only store shows first)."""
        try:
            cur.execute(self._begin)
        except self._driver_error as exc:
            self._raise_trouble(exc)
            raise

    def _rollback(self) -> None:
        # The original error matters more than a failed rollback (e.g. a lost
        # connection, or SQLite having rolled back already).
        with contextlib.suppress(Exception):
            self._cur.execute("ROLLBACK")

    def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._lock:
            cur = self._cursor()
            try:
                cur.execute(sql, params)
                return cur.fetchone()
            except self._driver_error as exc:
                self._raise_trouble(exc)
                raise

    def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            cur = self._cursor()
            try:
                cur.execute(sql, params)
                return cur.fetchall()
            except self._driver_error as exc:
                self._raise_trouble(exc)
                raise

    def _raise_trouble(self, exc: BaseException) -> None:
        """Raise ``StoreError`` when the store's surroundings caused ``exc``
        (``Dialect.trouble``), ``StoreUnreachable`` when it also broke a connection
        this store can reopen (the next call reopens it); return otherwise, for the
        caller to re-raise it."""
        if isinstance(exc, self._driver_error):
            reason = self.dialect.trouble(exc, self.url)
            if reason is not None:
                if self._reopen is not None and _broken(self._conn):
                    self._lost = True
                    raise StoreUnreachable(reason) from exc
                raise StoreError(reason) from exc

    def _cursor(self) -> Cursor:
        """The cursor to use, on a new connection when the last one was lost (held
        lock). ``StoreUnreachable`` while the server still cannot be reached."""
        if self._lost:
            assert self._reopen is not None
            with contextlib.suppress(Exception):
                self._conn.close()
            try:
                conn = self._reopen()
            except StoreError as exc:
                raise StoreUnreachable(str(exc)) from None
            self._conn, self._cur, self._lost = conn, conn.cursor(), False
        return self._cur

    def _run_not_found(self, run_id: str) -> RunNotFound:
        return RunNotFound(
            f"no run '{run_id}' in the store at {self.url}; see `stageflow runs list`"
        )

    def _lease_lost(self, cur: Cursor, run_id: str, epoch: int) -> LeaseLost | RunNotFound:
        """Why a fenced commit of ``run_id`` changed no row: the run is gone, or it
        was taken over (the new owner named)."""
        cur.execute(self._sql.select_run, (run_id,))
        found = cur.fetchone()
        if found is None:
            return self._run_not_found(run_id)
        run = _run_record(found)
        return LeaseLost(
            f"run '{run_id}' was taken over by {run.lease_owner} (lease epoch "
            f"{run.lease_epoch}; this process held epoch {epoch}): this process stopped "
            "its attempts and committed nothing more",
            owner=run.lease_owner,
        )

    def _raise_missing_run(self, cur: Cursor, run_ids: list[str]) -> None:
        for run_id in run_ids:
            cur.execute(self._sql.select_run, (run_id,))
            if cur.fetchone() is None:
                raise self._run_not_found(run_id)


def _broken(conn: Connection) -> bool:
    """Whether a driver connection is closed or broken (psycopg's ``closed`` and
    ``broken``; an SQLite connection has neither and never breaks)."""
    return bool(getattr(conn, "broken", False) or getattr(conn, "closed", False))


def _pipeline_row(p: PipelineRecord) -> tuple[Any, ...]:
    return (p.name, p.version, p.spec_json, p.created_at, p.owner)


def _run_record(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        pipeline=row[1],
        pipeline_version=row[2],
        state=row[3],
        params=json.loads(row[4]),
        created_at=row[5],
        started_at=row[6],
        ended_at=row[7],
        owner_host=row[8],
        owner_pid=row[9],
        owner_started_at=row[10],
        heartbeat_at=row[11],
        executor=row[12],
        source=row[13],
        lease_owner=row[14],
        lease_epoch=row[15],
        lease_expires_at=row[16],
        priority=row[17],
        owner=row[18],
        triggered_by=row[19],
    )


# The scheduling and usage fields (AttemptRecord's 8th on): a later record of an
# attempt leaves them None where an earlier one set them.
_MERGED_FROM = AttemptRecord._fields.index("queued_at")
_USAGE_FROM = AttemptRecord._fields.index("cpu_seconds") - _MERGED_FROM
_NO_USAGE = (None,) * (len(AttemptRecord._fields) - _MERGED_FROM - _USAGE_FROM)


def _merged_attempts(records: Sequence[AttemptRecord]) -> list[AttemptRecord]:
    """One record per attempt: the last one, with the scheduling and usage fields
    it leaves ``None`` taken from earlier ones (as the upsert does across commits)."""
    out: dict[tuple[str, str, int], AttemptRecord] = {}
    for a in records:
        key = (a.run_id, a.task_id, a.attempt)
        earlier = out.get(key)
        if earlier is not None:
            later, before = a[_MERGED_FROM:], earlier[_MERGED_FROM:]
            # Nothing to take when the earlier record is the same scheduling fields
            # (the runner repeats them in an attempt's end) and no usage.
            if before[_USAGE_FROM:] != _NO_USAGE or later[:_USAGE_FROM] != before[:_USAGE_FROM]:
                a = AttemptRecord._make(
                    a[:_MERGED_FROM]
                    + tuple(
                        mine if mine is not None else theirs
                        for mine, theirs in zip(later, before, strict=True)
                    )
                )
        out[key] = a
    return list(out.values())


def _group_by_run(rows: Sequence[Sequence[Any]]) -> list[tuple[RunRecord, list[AttemptRecord]]]:
    """Rows of run columns + attempt columns (``NULL`` for a run without attempts),
    ordered by run, as (run, its attempts)."""
    out: list[tuple[RunRecord, list[AttemptRecord]]] = []
    width = _RUN_WIDTH
    for row in rows:
        if not out or out[-1][0].run_id != row[0]:
            out.append((_run_record(row), []))
        if row[width] is not None:
            out[-1][1].append(AttemptRecord(row[0], *row[width:]))
    return out


def _cache_row(e: CacheEntry) -> tuple[Any, ...]:
    o = e.output
    return (
        e.key,
        e.pipeline,
        o.run_id,
        o.task_id,
        o.kind,
        o.serializer,
        o.size,
        o.sha256,
        o.data,
        o.uri,
        e.created_at,
        e.expires_at,
    )


def _circuit_state(row: Sequence[Any]) -> CircuitState:
    from stageflow.engine.circuit import CircuitState  # not loaded by the CLI's reads

    return CircuitState(
        name=row[0],
        state=row[1],
        failures=row[2],
        opened_until=row[3],
        trial_started=row[4],
        updated_at=row[5],
    )


_NONE = "none"  # the serializer of a None output (runtime.artifacts)
_NONE_SHA256 = hashlib.sha256(b"").hexdigest()


def _output_ref(row: Sequence[Any]) -> OutputRef:
    if row[2] is None:  # a success without an output row: it returned None
        return OutputRef(row[0], row[1], "inline", _NONE, 0, _NONE_SHA256, data=b"")
    data = row[6]
    return OutputRef(
        run_id=row[0],
        task_id=row[1],
        kind=cast(Literal["inline", "file"], row[2]),
        serializer=row[3],
        size=row[4],
        sha256=row[5],
        data=None if data is None else bytes(data),
        uri=row[7],
    )


# -- SQL ----------------------------------------------------------------------
# Written with '?' placeholders; _statements translates them once per dialect.
# Literal strings only: no value is ever formatted into SQL.

_INSERT_REQUEST = (
    "INSERT INTO control_requests (run_id, request, task_id, requested_at, requested_by, "
    "comment) VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
)
_SELECT_REQUESTS = (
    "SELECT run_id, request, task_id, requested_at, requested_by, comment, id "
    "FROM control_requests WHERE run_id = ? AND id > ? ORDER BY id"
)

_SELECT_RUN = (
    "SELECT run_id, pipeline, pipeline_version, state, params_json, created_at, started_at, "
    "ended_at, owner_host, owner_pid, owner_started_at, heartbeat_at, executor, source, "
    "lease_owner, lease_epoch, lease_expires_at, priority, owner, triggered_by FROM runs "
)
# The queue (claimable_runs, claim_next): unfinished runs whose lease is free or
# expired at the parameter's time, in queue order. The state condition repeats the
# WHERE of the partial index runs_in_queue (migration 9), so the planners use it.
# A run with a not-before time (schema 17: a retry waiting out its delay) waits until it.
_IN_QUEUE = (
    "WHERE state IN ('queued', 'running') AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
    "AND (not_before IS NULL OR not_before <= ?) "
)
_QUEUE_ORDER = "ORDER BY priority DESC, created_at, run_id "
_RUN_WIDTH = 20  # the run columns in front of the attempt columns below
# Runs (alias r) with their attempts, in the order of _RUN_WIDTH run columns, then
# AttemptRecord's fields after run_id; a run without attempts gives one row of NULLs.
_SELECT_RUN_ATTEMPTS = (
    "SELECT r.run_id, r.pipeline, r.pipeline_version, r.state, r.params_json, r.created_at, "
    "r.started_at, r.ended_at, r.owner_host, r.owner_pid, r.owner_started_at, r.heartbeat_at, "
    "r.executor, r.source, r.lease_owner, r.lease_epoch, r.lease_expires_at, r.priority, "
    "r.owner, r.triggered_by, a.task_id, a.attempt, a.state, a.started_at, a.ended_at, a.error, "
    "a.queued_at, a.request_json, a.gpu_devices, a.cpu_seconds, a.peak_rss_mb, a.gpu_seconds, "
    "a.rows_in, a.rows_out "
)
_RECENT_RUNS = (
    "FROM (SELECT * FROM runs WHERE pipeline = ? ORDER BY created_at DESC, run_id DESC LIMIT ?) "
)
_RUN_ATTEMPTS_JOIN = (
    "r LEFT JOIN attempts a ON a.run_id = r.run_id "
    "LEFT JOIN task_runs t ON t.run_id = a.run_id AND t.task_id = a.task_id "
)


@dataclass(frozen=True, slots=True)
class _Statements:
    insert_pipeline: str
    publish_pipeline: str
    requeue_run: str
    reset_task_runs: str
    delete_pipeline: str
    select_pipeline_owner: str
    select_pipeline: str
    select_latest_pipeline: str
    insert_run: str
    update_run: str
    claim_run: str
    renew_lease: str
    release_lease: str
    claimable_runs: str
    claim_next_pg: str
    claim_next_sqlite: str
    select_run: str
    select_task_runs: str
    select_attempts: str
    select_task_attempts: str
    select_recent_attempts: str
    select_task_durations: str
    next_seq: str
    select_attempts_between: str
    select_pipeline_attempts_between: str
    select_task_run_stats: str
    count_run_states: str
    select_pipeline_names: str
    count_runs: str
    count_active_tasks: str
    oldest_queued: str
    count_expired_leases: str
    select_versions: str
    select_versions_of: str
    select_events: str
    select_events_after: str
    select_outputs: str
    select_cache: str
    delete_expired_cache: str
    select_circuit: str
    select_circuit_for_update: str
    insert_circuit_if_absent: str
    upsert_circuit: str


@dataclass(frozen=True, slots=True)
class _MultiRow:
    """``INSERT ... VALUES`` + one ``row`` per record + ``suffix`` (``?`` placeholders)."""

    head: str
    row: str
    suffix: str = ""


_CHUNK_ROWS = 128  # 128 rows x at most 15 values: far under SQLite's 32,766 variables

_UPSERT_TASK_RUN = _MultiRow(
    "INSERT INTO task_runs (run_id, task_id, seq, state, attempts, started_at, ended_at, error, "
    "note) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
    " ON CONFLICT (run_id, task_id) DO UPDATE SET state = excluded.state, "
    "attempts = excluded.attempts, started_at = excluded.started_at, "
    "ended_at = excluded.ended_at, error = excluded.error, note = excluded.note",
)
# The scheduling and usage columns keep what an earlier row set when a later one
# leaves them NULL: the runner writes queued_at/request on the running row and the
# measurements on the final one.
# The notes of a success whose own attempt ran, as SQL literals (constants: no quotes).
_RAN_NOTES_SQL = ", ".join(f"'{note}'" for note in sorted(RAN_NOTES))
_UPSERT_ATTEMPT = _MultiRow(
    "INSERT INTO attempts (run_id, task_id, attempt, state, started_at, ended_at, error, "
    "queued_at, request_json, gpu_devices, cpu_seconds, peak_rss_mb, gpu_seconds, rows_in, "
    "rows_out) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    " ON CONFLICT (run_id, task_id, attempt) DO UPDATE SET state = excluded.state, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, error = excluded.error, "
    "queued_at = COALESCE(excluded.queued_at, attempts.queued_at), "
    "request_json = COALESCE(excluded.request_json, attempts.request_json), "
    "gpu_devices = COALESCE(excluded.gpu_devices, attempts.gpu_devices), "
    "cpu_seconds = COALESCE(excluded.cpu_seconds, attempts.cpu_seconds), "
    "peak_rss_mb = COALESCE(excluded.peak_rss_mb, attempts.peak_rss_mb), "
    "gpu_seconds = COALESCE(excluded.gpu_seconds, attempts.gpu_seconds), "
    "rows_in = COALESCE(excluded.rows_in, attempts.rows_in), "
    "rows_out = COALESCE(excluded.rows_out, attempts.rows_out)",
)
# A run's events of one commit: one row, a JSON array of the EventRecords' fields
# after run_id (migration 10): a transition costs a few bytes, not a row and its index.
_INSERT_EVENTS = _MultiRow("INSERT INTO event_batches (run_id, events) VALUES ", "(?, ?)")


def _event_batches(events: Sequence[EventRecord]) -> list[tuple[str, str]]:
    """``events`` as one (run_id, JSON) row per run, each run's in their order."""
    first = events[0].run_id
    if all(e.run_id == first for e in events):  # the usual case: one run's commit
        by_run: dict[str, Any] = {first: [e[1:] for e in events]}
    else:
        by_run = {}
        for event in events:
            by_run.setdefault(event.run_id, []).append(event[1:])
    # Floats are written as repr: times read back exactly.
    return [(run_id, _compact_json(rows)) for run_id, rows in by_run.items()]


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


_UPSERT_OUTPUT = _MultiRow(
    "INSERT INTO outputs (run_id, task_id, kind, serializer, size, sha256, data, uri) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?)",
    " ON CONFLICT (run_id, task_id) DO UPDATE SET kind = excluded.kind, "
    "serializer = excluded.serializer, size = excluded.size, "
    "sha256 = excluded.sha256, data = excluded.data, uri = excluded.uri",
)


_DELETE_OUTPUT = _MultiRow("DELETE FROM outputs WHERE (run_id, task_id) IN (VALUES ", "(?, ?)", ")")


_UPSERT_RECORD = _MultiRow(
    "INSERT INTO run_records (run_id, record_json, updated_at) VALUES ",
    "(?, ?, ?)",
    " ON CONFLICT (run_id) DO UPDATE SET record_json = excluded.record_json, "
    "updated_at = excluded.updated_at",
)
_UPSERT_CACHE = _MultiRow(
    "INSERT INTO cache_entries (cache_key, pipeline, run_id, task_id, kind, serializer, size, "
    "sha256, data, uri, created_at, expires_at) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    " ON CONFLICT (cache_key) DO UPDATE SET pipeline = excluded.pipeline, "
    "run_id = excluded.run_id, task_id = excluded.task_id, kind = excluded.kind, "
    "serializer = excluded.serializer, size = excluded.size, sha256 = excluded.sha256, "
    "data = excluded.data, uri = excluded.uri, created_at = excluded.created_at, "
    "expires_at = excluded.expires_at",
)
_SELECT_CIRCUIT = (
    "SELECT name, state, failures, opened_until, trial_started, updated_at FROM circuits "
    "WHERE name = ?"
)


_flat = itertools.chain.from_iterable


@functools.lru_cache(maxsize=1024)
def _multi_row_sql(dialect: Dialect, statement: _MultiRow, count: int) -> str:
    """The statement for ``count`` rows in ``dialect``'s placeholder style (cached)."""
    return dialect.sql(statement.head + ", ".join([statement.row] * count) + statement.suffix)


@functools.lru_cache(maxsize=16)
def _run_durations_sql(dialect: Dialect, buckets: int) -> str:
    """``Store.run_durations``'s statement for ``buckets`` bounds (literal strings only)."""
    took = "(ended_at - started_at)"
    counts = "".join(f", SUM(CASE WHEN {took} <= ? THEN 1 ELSE 0 END)" for _ in range(buckets))
    return dialect.sql(
        f"SELECT pipeline, COUNT(*), SUM({took}){counts} FROM runs "  # noqa: S608
        "WHERE state IN ('success', 'failed', 'cancelled') AND started_at IS NOT NULL "
        "AND ended_at IS NOT NULL GROUP BY pipeline"
    )


@functools.lru_cache(maxsize=256)
def _query_runs_sql(
    dialect: Dialect,
    pipeline: bool,
    states: int,
    since: bool,
    until: bool,
    before: bool,
    owner: bool = False,
    triggered_by: bool = False,
    unowned: bool = False,
) -> str:
    """``Store.query_runs``'s statement for the filters given (cached per combination)."""
    where = []
    if pipeline:
        where.append("pipeline = ?")
    if states:
        where.append(f"state IN ({', '.join(['?'] * states)})")
    if since:
        where.append("created_at >= ?")
    if until:
        where.append("created_at < ?")
    if owner:
        where.append("owner = ?")
    if triggered_by:
        where.append("triggered_by = ?")
    if unowned:
        where.append("owner IS NULL")
    if before:  # keyset pagination: strictly after the cursor in (created_at, run_id) DESC
        where.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return dialect.sql(_SELECT_RUN + clause + "ORDER BY created_at DESC, run_id DESC LIMIT ?")


_SELECT_VERSIONS = (
    "SELECT p.name, p.version, p.created_at, COUNT(r.run_id), MAX(r.created_at), p.owner "
    "FROM pipelines p LEFT JOIN runs r ON r.pipeline = p.name AND r.pipeline_version = p.version "
)
_GROUP_VERSIONS = (
    "GROUP BY p.name, p.version, p.created_at, p.owner "
    "ORDER BY p.name, p.created_at DESC, p.version DESC"
)


@functools.cache
def _statements(dialect: Dialect) -> _Statements:
    q = dialect.sql
    return _Statements(
        insert_pipeline=q(
            "INSERT INTO pipelines (name, version, spec_json, created_at, owner) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, version) DO NOTHING"
        ),
        # A deleted version saved again comes back as the newest.
        publish_pipeline=q(
            "INSERT INTO pipelines (name, version, spec_json, created_at, owner) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, version) DO UPDATE SET "
            "deleted_at = NULL, created_at = excluded.created_at, owner = excluded.owner "
            "WHERE pipelines.deleted_at IS NOT NULL"
        ),
        requeue_run=q(
            "UPDATE runs SET state = 'running', ended_at = NULL, lease_owner = NULL, "
            "lease_expires_at = NULL, lease_epoch = lease_epoch + 1, heartbeat_at = ? "
            "WHERE run_id = ? AND state = ?"
        ),
        reset_task_runs=q(
            "UPDATE task_runs SET state = 'pending', ended_at = NULL, error = NULL, note = NULL "  # noqa: S608 (literal strings only)
            "WHERE run_id = ? AND task_id "
            + (
                "= ANY(?::text[])"
                if dialect.name == "postgresql"
                else "IN (SELECT value FROM json_each(?))"
            )
        ),
        delete_pipeline=q(
            "UPDATE pipelines SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL"
        ),
        select_pipeline_owner=q(
            "SELECT owner FROM pipelines WHERE name = ? "
            "ORDER BY created_at DESC, version DESC LIMIT 1"
        ),
        select_pipeline=q(
            "SELECT name, version, spec_json, created_at, owner, deleted_at FROM pipelines "
            "WHERE name = ? AND version = ?"
        ),
        select_latest_pipeline=q(
            "SELECT name, version, spec_json, created_at, owner, deleted_at FROM pipelines "
            "WHERE name = ? AND deleted_at IS NULL ORDER BY created_at DESC, version DESC LIMIT 1"
        ),
        insert_run=q(
            "INSERT INTO runs (run_id, pipeline, pipeline_version, state, params_json, "
            "created_at, started_at, ended_at, owner_host, owner_pid, owner_started_at, "
            "heartbeat_at, executor, source, lease_owner, lease_epoch, lease_expires_at, "
            "priority, owner, triggered_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO NOTHING"
        ),
        update_run=q(
            "UPDATE runs SET state = COALESCE(?, state), started_at = COALESCE(?, started_at), "
            "ended_at = COALESCE(?, ended_at), heartbeat_at = COALESCE(?, heartbeat_at) "
            "WHERE run_id = ?"
        ),
        claim_run=q(
            # A claim of a run that another owner held (its lease lapsed, or it was
            # handed back) is a takeover; SET reads the row as it was.
            "UPDATE runs SET lease_owner = ?, lease_epoch = lease_epoch + 1, "
            "lease_expires_at = ?, owner_host = ?, owner_pid = ?, owner_started_at = ?, "
            "heartbeat_at = ?, "
            "takeovers = takeovers + CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END "
            "WHERE run_id = ? AND lease_epoch = ?"
        ),
        renew_lease=q(
            "UPDATE runs SET lease_expires_at = ?, heartbeat_at = ? "
            "WHERE run_id = ? AND lease_epoch = ?"
        ),
        release_lease=q(
            "UPDATE runs SET lease_epoch = lease_epoch + 1, lease_expires_at = ? "
            "WHERE run_id = ? AND lease_epoch = ?"
        ),
        claimable_runs=q(_SELECT_RUN + _IN_QUEUE + _QUEUE_ORDER + "LIMIT ?"),
        # The same queue, first run only, less the excluded ids (a text array on
        # PostgreSQL, a JSON array on SQLite); locked for the claim that follows.
        claim_next_pg=q(
            _SELECT_RUN
            + _IN_QUEUE
            + "AND NOT (run_id = ANY(?::text[])) "
            + _QUEUE_ORDER
            + "LIMIT 1 FOR UPDATE SKIP LOCKED"
        ),
        claim_next_sqlite=q(
            _SELECT_RUN  # noqa: S608 (literal strings only, as every statement here)
            + _IN_QUEUE
            + "AND run_id NOT IN (SELECT value FROM json_each(?)) "
            + _QUEUE_ORDER
            + "LIMIT 1"
        ),
        select_run=q(_SELECT_RUN + "WHERE run_id = ?"),
        select_task_runs=q(
            "SELECT run_id, task_id, state, attempts, started_at, ended_at, error, note "
            "FROM task_runs WHERE run_id = ? ORDER BY seq"
        ),
        select_attempts=q(
            "SELECT a.run_id, a.task_id, a.attempt, a.state, a.started_at, a.ended_at, a.error, "
            "a.queued_at, a.request_json, a.gpu_devices, a.cpu_seconds, a.peak_rss_mb, "
            "a.gpu_seconds, a.rows_in, a.rows_out FROM attempts a "
            "JOIN task_runs t ON t.run_id = a.run_id AND t.task_id = a.task_id "
            "WHERE a.run_id = ? ORDER BY t.seq, a.attempt"
        ),
        select_task_attempts=q(
            "SELECT run_id, task_id, attempt, state, started_at, ended_at, error, queued_at, "
            "request_json, gpu_devices, cpu_seconds, peak_rss_mb, gpu_seconds, rows_in, rows_out "
            "FROM attempts "
            "WHERE run_id = ? AND task_id = ? ORDER BY attempt"
        ),
        next_seq=q("SELECT COALESCE(MAX(seq) + 1, 0) FROM task_runs WHERE run_id = ?"),
        select_task_durations=q(
            "SELECT t.task_id, t.ended_at - t.started_at FROM task_runs t WHERE t.run_id IN "  # noqa: S608 (module constants only)
            "(SELECT run_id FROM runs WHERE pipeline = ? "
            "ORDER BY created_at DESC, run_id DESC LIMIT ?) "
            "AND t.state = 'success' AND t.started_at > 0 AND t.ended_at > 0 "
            "AND (t.note IS NULL OR t.note IN (" + _RAN_NOTES_SQL + "))"
        ),
        select_recent_attempts=q(
            _SELECT_RUN_ATTEMPTS
            + _RECENT_RUNS
            + _RUN_ATTEMPTS_JOIN
            + "ORDER BY r.created_at DESC, r.run_id DESC, t.seq, a.attempt"
        ),
        select_attempts_between=q(
            _SELECT_RUN_ATTEMPTS
            + "FROM runs "
            + _RUN_ATTEMPTS_JOIN
            + "WHERE r.created_at >= ? AND r.created_at < ? "
            "ORDER BY r.created_at, r.run_id, t.seq, a.attempt"
        ),
        select_pipeline_attempts_between=q(
            _SELECT_RUN_ATTEMPTS
            + "FROM runs "
            + _RUN_ATTEMPTS_JOIN
            + "WHERE r.pipeline = ? AND r.created_at >= ? AND r.created_at < ? "
            "ORDER BY r.created_at, r.run_id, t.seq, a.attempt"
        ),
        # The runs are cut to the limit first: each has at least one task run.
        select_task_run_stats=q(
            "SELECT r.run_id, r.state, r.created_at, t.task_id, t.state, t.attempts, "
            "a.started_at, a.ended_at, t.ended_at, t.error, t.note FROM "
            "(SELECT run_id, state, created_at FROM runs WHERE pipeline = ? AND created_at >= ? "
            "ORDER BY created_at DESC, run_id DESC LIMIT ?) r "
            "JOIN task_runs t ON t.run_id = r.run_id "
            "LEFT JOIN attempts a ON a.run_id = t.run_id AND a.task_id = t.task_id "
            "AND a.attempt = t.attempts "
            "ORDER BY r.created_at DESC, r.run_id DESC, t.seq LIMIT ?"
        ),
        count_run_states=q(
            "SELECT state, COUNT(*) FROM runs WHERE pipeline = ? AND created_at >= ? GROUP BY state"
        ),
        count_runs=q("SELECT pipeline, state, COUNT(*) FROM runs GROUP BY pipeline, state"),
        # CROSS JOIN: SQLite reads the unfinished runs first (the partial index
        # runs_in_queue), then their task runs by key; a plain JOIN made it scan every
        # task run of the store's history (47 ms a scrape at 100,000 task runs).
        count_active_tasks=q(
            "SELECT t.state, COUNT(*) FROM runs r CROSS JOIN task_runs t "
            "WHERE t.run_id = r.run_id AND r.state IN ('queued', 'running') GROUP BY t.state"
        ),
        # The IN repeats the partial index runs_in_queue's WHERE, so the planner uses it;
        # ``+ 0`` keeps SQLite from walking runs_by_created_at from the oldest run instead.
        oldest_queued=q(
            "SELECT MIN(created_at + 0) FROM runs WHERE state IN ('queued', 'running') "
            "AND state = 'queued'"
        ),
        count_expired_leases=q(
            "SELECT COUNT(*) FROM runs WHERE state IN ('queued', 'running') "
            "AND lease_expires_at IS NOT NULL AND lease_expires_at <= ?"
        ),
        select_pipeline_names=q(
            "SELECT DISTINCT name FROM pipelines WHERE deleted_at IS NULL ORDER BY name"
        ),
        select_versions=q(_SELECT_VERSIONS + "WHERE p.deleted_at IS NULL " + _GROUP_VERSIONS),
        select_versions_of=q(
            _SELECT_VERSIONS + "WHERE p.name = ? AND p.deleted_at IS NULL " + _GROUP_VERSIONS
        ),
        select_events=q("SELECT events FROM event_batches WHERE run_id = ? ORDER BY id"),
        select_events_after=q(
            "SELECT id, events FROM event_batches WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?"
        ),
        # A succeeded task without an output row returned None (kind NULL here).
        select_outputs=q(
            "SELECT t.run_id, t.task_id, o.kind, o.serializer, o.size, o.sha256, o.data, o.uri "
            "FROM task_runs t LEFT JOIN outputs o "
            "ON o.run_id = t.run_id AND o.task_id = t.task_id "
            "WHERE t.run_id = ? AND (o.task_id IS NOT NULL OR t.state = 'success') "
            "ORDER BY t.seq"
        ),
        select_cache=q(
            "SELECT cache_key, pipeline, run_id, task_id, kind, serializer, size, sha256, data, "
            "uri, created_at, expires_at FROM cache_entries WHERE cache_key = ?"
        ),
        delete_expired_cache=q(
            "DELETE FROM cache_entries WHERE expires_at IS NOT NULL AND expires_at <= ?"
        ),
        select_circuit=q(_SELECT_CIRCUIT),
        # SQLite has no FOR UPDATE; its BEGIN IMMEDIATE holds the write lock already.
        select_circuit_for_update=q(
            _SELECT_CIRCUIT + (" FOR UPDATE" if dialect.name == "postgresql" else "")
        ),
        # The placeholder row (updated_at NULL) exists only to be locked; readers skip it.
        insert_circuit_if_absent=q(
            "INSERT INTO circuits (name, state, failures, updated_at) "
            "VALUES (?, 'closed', 0, NULL) ON CONFLICT (name) DO NOTHING"
        ),
        upsert_circuit=q(
            "INSERT INTO circuits (name, state, failures, opened_until, trial_started, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "state = excluded.state, failures = excluded.failures, "
            "opened_until = excluded.opened_until, trial_started = excluded.trial_started, "
            "updated_at = excluded.updated_at"
        ),
    )


# -- global pools (runtime.pools) ---------------------------------------------------

# A holding is live while its run's lease is: same epoch, not expired (at the
# parameter's time), run not final (literal strings only).
_LIVE_HOLDING = (
    "EXISTS (SELECT 1 FROM runs r WHERE r.run_id = pool_slots.run_id "
    "AND r.lease_epoch = pool_slots.lease_epoch AND r.lease_expires_at IS NOT NULL "
    "AND r.lease_expires_at > ? AND r.state NOT IN ('success', 'failed', 'cancelled')) "
)
_SELECT_LIVE_HOLDINGS = (
    "SELECT pool, run_id, task_id, attempt, lease_epoch, acquired_at "
    "FROM pool_slots WHERE " + _LIVE_HOLDING
)
_DELETE_DEAD_HOLDINGS = (
    "DELETE FROM pool_slots WHERE pool = ? AND NOT " + _LIVE_HOLDING  # noqa: S608
)


@dataclass(frozen=True, slots=True)
class _PoolStatements:
    select_pools: str
    upsert_pool: str
    insert_pool_if_absent: str
    delete_pool: str
    lock_pool: str
    delete_dead_holdings: str
    delete_own_holding: str
    insert_holding_if_free: str
    select_live_holdings: str
    select_live_holdings_of_pool: str


@functools.cache
def _pool_statements(dialect: Dialect) -> _PoolStatements:
    q = dialect.sql
    return _PoolStatements(
        select_pools=q("SELECT name, slots, updated_at FROM pools ORDER BY name"),
        upsert_pool=q(
            "INSERT INTO pools (name, slots, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) "
            "DO UPDATE SET slots = excluded.slots, updated_at = excluded.updated_at"
        ),
        insert_pool_if_absent=q(
            "INSERT INTO pools (name, slots, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        delete_pool=q("DELETE FROM pools WHERE name = ?"),
        # SQLite has no FOR UPDATE; its BEGIN IMMEDIATE holds the write lock already.
        lock_pool=q(
            "SELECT slots FROM pools WHERE name = ? FOR UPDATE"
            if dialect.name == "postgresql"
            else "SELECT slots FROM pools WHERE name = ?"
        ),
        delete_dead_holdings=q(_DELETE_DEAD_HOLDINGS),
        delete_own_holding=q(
            "DELETE FROM pool_slots WHERE pool = ? AND run_id = ? AND task_id = ?"
        ),
        # The compare-and-set: inserts one row only while the live count is below the size.
        insert_holding_if_free=q(
            "INSERT INTO pool_slots (pool, run_id, task_id, attempt, lease_epoch, acquired_at) "
            "SELECT ?, ?, ?, ?, ?, ? FROM pools p WHERE p.name = ? "
            "AND (SELECT COUNT(*) FROM pool_slots s WHERE s.pool = p.name) < p.slots"
        ),
        select_live_holdings=q(
            _SELECT_LIVE_HOLDINGS + "ORDER BY pool, acquired_at, run_id, task_id"
        ),
        select_live_holdings_of_pool=q(
            _SELECT_LIVE_HOLDINGS + "AND pool = ? ORDER BY acquired_at, run_id, task_id"
        ),
    )
