"""What the service's metrics read from the store in SQL (schema 12): workers, lease
takeovers and the histograms of task durations, task queue waits and run claim
latencies.

``MetricsTables`` is a part of ``SqlStore`` (it inherits it), kept apart because
these queries serve ``/metrics``, not runs. A worker records itself in ``workers``
(its capacity, a heartbeat every few seconds, deleted when it stops), so a scrape
of any API process sees the capacity of every live worker of the store, on any
host. The histograms are computed by the database at each scrape: one grouped
query each, counting how many values are at most each bucket bound. Literal
strings only: no value is ever formatted into SQL.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.runtime.store.base import Histogram, WorkerRecord

if TYPE_CHECKING:
    from stageflow.runtime.store.dialect import Cursor, Dialect

__all__ = ["MetricsTables"]

_WORKER_COLUMNS = "owner, host, pid, started_at, heartbeat_at, capacity_json, concurrency"

#: A mapped task's own attempt (``train``, beside its elements ``train[0]``, ...) runs
#: no code: it spans its elements, from the expansion to the last one's end. It is no
#: attempt to count, so it is counted again with weight -1: found from its element 0
#: (one key lookup per mapped task, where excluding it row by row would cost one per
#: attempt). ``CROSS JOIN`` makes SQLite read the elements first (it otherwise scans
#: every run's task runs for each attempt); PostgreSQL plans it as any inner join. No
#: ``%`` (psycopg's placeholder) nor ``?`` in these strings.
_ELEMENT_0 = (
    "substr(e.task_id, length(e.task_id) - 2) = '[0]' AND a.run_id = e.run_id "
    "AND a.task_id = substr(e.task_id, 1, length(e.task_id) - 3) AND "
)
#: Where an attempt histogram's rows come from, each ending where its condition
#: follows: (counted, taken back out), from every run or (``True``) from the recent
#: runs ``r`` of ``_RECENT_RUNS``, read first, then their attempts by key.
_ATTEMPT_ROWS = {
    False: (
        "attempts a JOIN runs r ON r.run_id = a.run_id WHERE ",
        "task_runs e CROSS JOIN attempts a JOIN runs r ON r.run_id = a.run_id WHERE " + _ELEMENT_0,
    ),
    True: (
        "r CROSS JOIN attempts a WHERE a.run_id = r.run_id AND ",
        "r CROSS JOIN task_runs e CROSS JOIN attempts a WHERE e.run_id = r.run_id AND "
        + _ELEMENT_0,
    ),
}
#: The runs whose attempts may have ended (or started) after a time ``?``: those that
#: ended after it, or have not ended (``ended_at`` NULL; a resumed run keeps its old
#: ``ended_at`` while it runs, so the unfinished states are read too). Each part reads
#: an index (runs_by_ended_at, runs_in_queue, runs_started); MATERIALIZED keeps SQLite
#: from scanning every run in pipeline order instead (SQLite 3.35+, PostgreSQL 12+).
_RECENT_RUNS = (
    "WITH r AS MATERIALIZED ("
    "SELECT run_id, pipeline FROM runs WHERE ended_at IS NULL OR ended_at > ? "
    "UNION SELECT run_id, pipeline FROM runs WHERE state IN ('queued', 'running') "
    "UNION SELECT run_id, pipeline FROM runs WHERE state IN ('running', 'paused')) "
)

#: Of each histogram: (what is measured, the labels' columns, the condition on its rows,
#: the attempts' time column it may be windowed by, or None: a histogram of runs, read
#: from ``runs`` whole). The measured value is never NULL in those rows.
_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], str, str | None]] = {
    "attempt_durations": (
        "(a.ended_at - a.started_at)",
        ("r.pipeline", "a.task_id"),
        "a.started_at IS NOT NULL AND a.ended_at IS NOT NULL",
        "a.ended_at",
    ),
    "attempt_queue_waits": (
        "(a.started_at - a.queued_at)",
        ("r.pipeline",),
        "a.started_at IS NOT NULL AND a.queued_at IS NOT NULL",
        "a.started_at",
    ),
    "claim_latencies": (
        "(started_at - created_at)",
        ("pipeline",),
        "started_at IS NOT NULL",
        None,
    ),
}


@dataclass(frozen=True, slots=True)
class _MetricsStatements:
    upsert_worker: str
    beat_worker: str
    delete_worker: str
    select_workers: str
    select_requests_in_use: str
    count_task_runs: str
    sum_takeovers: str


@functools.cache
def _statements(dialect: Dialect) -> _MetricsStatements:
    q = dialect.sql
    return _MetricsStatements(
        upsert_worker=q(
            f"INSERT INTO workers ({_WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
            "ON CONFLICT (owner) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
            "capacity_json = excluded.capacity_json, concurrency = excluded.concurrency"
        ),
        beat_worker=q("UPDATE workers SET heartbeat_at = ? WHERE owner = ?"),
        delete_worker=q("DELETE FROM workers WHERE owner = ?"),
        select_workers=q(
            f"SELECT {_WORKER_COLUMNS} FROM workers WHERE heartbeat_at >= ? ORDER BY owner"  # noqa: S608
        ),
        # Paused runs too: their running attempts go on (and hold what they asked for).
        # The unfinished runs first (their partial indexes), then their attempts by key:
        # a plain JOIN made SQLite scan every attempt of the store's history.
        select_requests_in_use=q(
            "WITH r AS MATERIALIZED (SELECT run_id FROM runs WHERE state IN ('queued', 'running') "
            "UNION SELECT run_id FROM runs WHERE state IN ('running', 'paused')) "
            "SELECT a.request_json FROM r CROSS JOIN attempts a WHERE a.run_id = r.run_id "
            "AND a.state = 'running' AND a.ended_at IS NULL AND a.request_json IS NOT NULL"
        ),
        count_task_runs=q(
            "SELECT r.pipeline, t.state, COUNT(*) FROM task_runs t "
            "JOIN runs r ON r.run_id = t.run_id GROUP BY r.pipeline, t.state"
        ),
        sum_takeovers=q(
            "SELECT pipeline, SUM(takeovers) FROM runs GROUP BY pipeline HAVING SUM(takeovers) > 0"
        ),
    )


@functools.lru_cache(maxsize=32)
def _histogram_sql(
    dialect: Dialect, which: str, buckets: int, after: bool = False, until: bool = False
) -> str:
    """The histogram's statement. Placeholders, in order: ``after`` (when windowed from
    a time: the recent runs' bound), the bucket bounds, then per part of the rows
    (counted, taken back out) ``after`` and ``until`` as given."""
    value, labels, condition, column = _HISTOGRAMS[which]
    if column is None:
        columns = ", ".join(labels)
        counts = "".join(f", SUM(CASE WHEN {value} <= ? THEN 1 ELSE 0 END)" for _ in range(buckets))
        return dialect.sql(
            f"SELECT {columns}, COUNT(*), SUM({value}){counts} FROM runs "  # noqa: S608
            f"WHERE {condition} GROUP BY {columns}"
        )
    window = (f" AND {column} > ?" if after else "") + (f" AND {column} <= ?" if until else "")
    counted, taken_back = (f"{source}{condition}{window}" for source in _ATTEMPT_ROWS[after])
    named = ", ".join(f"{c} AS l{i}" for i, c in enumerate(labels))
    columns = ", ".join(f"l{i}" for i in range(len(labels)))
    counts = "".join(", SUM(CASE WHEN v <= ? THEN w ELSE 0 END)" for _ in range(buckets))
    weighted = (
        f"SELECT {named}, {value} AS v, 1 AS w FROM {counted} "  # noqa: S608
        f"UNION ALL SELECT {named}, {value} AS v, -1 AS w FROM {taken_back}"
    )
    recent = _RECENT_RUNS if after else ""
    return dialect.sql(
        f"{recent}SELECT {columns}, SUM(w), SUM(w * v){counts} FROM ({weighted}) h "  # noqa: S608
        f"GROUP BY {columns} HAVING SUM(w) > 0"
    )


class MetricsTables:
    """Workers and the metrics' queries (``Store`` methods; see the protocol's docstrings)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...

        def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record ``worker`` (or replace the record of the same owner)."""
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).upsert_worker,
                (
                    worker.owner,
                    worker.host,
                    worker.pid,
                    worker.started_at,
                    worker.heartbeat_at,
                    json.dumps(worker.capacity, sort_keys=True),
                    worker.concurrency,
                ),
            )

    def beat_worker(self, owner: str, now: float) -> bool:
        """The worker ``owner`` is alive at ``now``; False when it has no record."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).beat_worker, (now, owner))
            return bool(cur.rowcount)

    def remove_worker(self, owner: str) -> None:
        """The worker ``owner`` stopped: its record goes (no-op when there is none)."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).delete_worker, (owner,))

    def workers(self, since: float) -> list[WorkerRecord]:
        """The workers whose last heartbeat is at ``since`` or later, by owner."""
        rows = self._fetchall(_statements(self.dialect).select_workers, (since,))
        return [
            WorkerRecord(
                str(owner),
                str(host),
                int(pid),
                float(started_at),
                float(heartbeat_at),
                {str(k): float(v) for k, v in json.loads(capacity_json or "{}").items()},
                int(concurrency),
            )
            for owner, host, pid, started_at, heartbeat_at, capacity_json, concurrency in rows
        ]

    def requests_in_use(self) -> list[str]:
        """The resource requests (``request_json``) of the running attempts of
        unfinished runs."""
        rows = self._fetchall(_statements(self.dialect).select_requests_in_use, ())
        return [str(request) for (request,) in rows]

    def task_run_counts(self) -> list[tuple[str, str, int]]:
        """(pipeline, state, number of task runs) for every pair that has task runs."""
        rows = self._fetchall(_statements(self.dialect).count_task_runs, ())
        return [(str(p), str(s), int(n)) for p, s, n in rows]

    def lease_takeovers(self) -> list[tuple[str, int]]:
        """(pipeline, how many times a lease of its runs was taken over) for every
        pipeline that had a takeover (``runs.takeovers``, counted by ``claim_run``)."""
        rows = self._fetchall(_statements(self.dialect).sum_takeovers, ())
        return [(str(p), int(n)) for p, n in rows]

    def attempt_durations(
        self, bounds: Sequence[float], *, after: float | None = None, until: float | None = None
    ) -> list[Histogram]:
        """Ended attempts' seconds from start to end, by (pipeline, task id); a mapped
        task's own attempt is left out (its elements' attempts count). ``after`` /
        ``until``: only attempts that ended in that span (``Store``)."""
        return self._histogram("attempt_durations", bounds, after, until)

    def attempt_queue_waits(
        self, bounds: Sequence[float], *, after: float | None = None, until: float | None = None
    ) -> list[Histogram]:
        """Started attempts' seconds from ready (queued for resources) to start, by
        (pipeline,); a mapped task's own attempt is left out. ``after`` / ``until``:
        only attempts that started in that span."""
        return self._histogram("attempt_queue_waits", bounds, after, until)

    def claim_latencies(self, bounds: Sequence[float]) -> list[Histogram]:
        """Started runs' seconds from submission to start (a worker claimed it, or
        ``stageflow run`` began it), by (pipeline,)."""
        return self._histogram("claim_latencies", bounds)

    def _histogram(
        self,
        which: str,
        bounds: Sequence[float],
        after: float | None = None,
        until: float | None = None,
    ) -> list[Histogram]:
        labels = len(_HISTOGRAMS[which][1])
        window = tuple(t for t in (after, until) if t is not None)
        params = ((after,) if after is not None else ()) + tuple(bounds) + window + window
        sql = _histogram_sql(self.dialect, which, len(bounds), after is not None, until is not None)
        rows = self._fetchall(sql, params)
        return [
            Histogram(
                tuple(str(v) for v in row[:labels]),
                int(row[labels]),
                float(row[labels + 1] or 0.0),
                [int(n or 0) for n in row[labels + 2 :]],
            )
            for row in rows
        ]
