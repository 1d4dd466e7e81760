"""Run retries and object schedules' objects in SQL (schema 17).

``RunRetryTables`` is a part of ``SqlStore`` (it inherits it), kept apart because
these tables serve the background duties (``runtime.run_retries``) and object
schedules, not a run's step. Policy:

- A retry run is created with a ``run_retries`` row in the run's own creating
  transaction (``SqlStore.create_run(retry=...)``); its ``retry_of`` is unique, so of
  any number of processes that see a run fail, exactly one creates its retry, the
  others meet the key and create nothing (``RetryTaken``, their run rolled back).
  The same transaction sets the run's ``not_before`` to the retry's due time: the
  queue (``claimable_runs``, ``claim_next``) skips the run until then.
- An object schedule's run is created with a ``schedule_objects`` row keyed by
  (schedule, object key), the same way (``TickTaken`` when another scheduler fired
  that object first); the objects present when the schedule began are recorded
  without a run, so they never fire.

Literal strings only: no value is ever formatted into SQL.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.errors import RetryTaken, TickTaken
from stageflow.runtime.store.base import RetryLink, RunRecord

if TYPE_CHECKING:
    from stageflow.runtime.store.dialect import Cursor, Dialect

__all__ = ["RunRetryTables", "object_key", "object_url"]


def object_key(url: str, identity: str) -> str:
    """An object's key in ``schedule_objects``: its URL and its version's identity (its
    modification time or etag), so a rewritten object is a new one."""
    return f"{url}\t{identity}"


def object_url(key: str) -> str:
    """The URL an ``object_key`` holds."""
    return key.split("\t", 1)[0]


@dataclass(frozen=True, slots=True)
class _RetryStatements:
    insert_retry: str
    set_not_before: str
    select_link: str
    select_retried_by: str
    select_failed_unretried: str
    select_started_ticks: str
    insert_object: str
    select_objects: str
    select_object_of_run: str


@functools.cache
def _statements(dialect: Dialect) -> _RetryStatements:
    q = dialect.sql
    return _RetryStatements(
        insert_retry=q(
            "INSERT INTO run_retries (run_id, retry_of, first_run_id, attempt, due_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (retry_of) DO NOTHING"
        ),
        set_not_before=q("UPDATE runs SET not_before = ? WHERE run_id = ?"),
        select_link=q(
            "SELECT retry_of, first_run_id, attempt, due_at FROM run_retries WHERE run_id = ?"
        ),
        select_retried_by=q("SELECT run_id, due_at FROM run_retries WHERE retry_of = ?"),
        select_failed_unretried=q(
            "SELECT r.run_id FROM runs r LEFT JOIN run_retries t ON t.retry_of = r.run_id "
            "WHERE r.state = 'failed' AND r.ended_at IS NOT NULL AND r.ended_at > ? "
            "AND t.run_id IS NULL ORDER BY r.ended_at, r.run_id LIMIT ?"
        ),
        # The started runs a tick made, and those an object made (they have no tick):
        # from the runs (a partial index holds only the running and paused ones), not
        # from every tick ever fired, and never the queue (it may be long).
        select_started_ticks=q(
            # CROSS JOIN: SQLite keeps the runs as the outer loop (else it may walk
            # every tick in schedule order for the ORDER BY); PostgreSQL plans it freely.
            "SELECT s.schedule, s.run_id FROM runs r CROSS JOIN schedule_runs s "
            "WHERE s.run_id = r.run_id AND r.state IN ('running', 'paused') "
            "UNION SELECT o.schedule, o.run_id FROM runs r CROSS JOIN schedule_objects o "
            "WHERE o.run_id = r.run_id AND r.state IN ('running', 'paused') ORDER BY 1, 2"
        ),
        insert_object=q(
            "INSERT INTO schedule_objects (schedule, object_key, run_id, seen_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (schedule, object_key) DO NOTHING"
        ),
        select_objects=q("SELECT object_key FROM schedule_objects WHERE schedule = ?"),
        select_object_of_run=q(
            "SELECT schedule, object_key FROM schedule_objects WHERE run_id = ?"
        ),
    )


class RunRetryTables:
    """Run retries and schedule objects (``Store`` methods; see the protocol's docstrings)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...

        def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any: ...

        def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

        def get_run(self, run_id: str) -> RunRecord: ...

    def _record_retry(self, cur: Cursor, retry: RetryLink, run_id: str, now: float) -> None:
        """In ``create_run``'s transaction: ``run_id`` retries ``retry.retry_of``, not
        before ``retry.due_at``; ``RetryTaken`` (the transaction rolls back) when another
        process created that retry first."""
        s = _statements(self.dialect)
        cur.execute(
            s.insert_retry,
            (run_id, retry.retry_of, retry.first_run_id, retry.attempt, retry.due_at, now),
        )
        if not cur.rowcount:
            raise RetryTaken(f"run {retry.retry_of} has its retry already")
        cur.execute(s.set_not_before, (retry.due_at, run_id))

    def _record_object(
        self, cur: Cursor, schedule_object: tuple[str, str], run_id: str, now: float
    ) -> None:
        """In ``create_run``'s transaction: the object fired ``run_id``; ``TickTaken``
        (the transaction rolls back) when another scheduler fired it first."""
        schedule, key = schedule_object
        cur.execute(_statements(self.dialect).insert_object, (schedule, key, run_id, now))
        if not cur.rowcount:
            raise TickTaken(f"schedule '{schedule}' fired object {key} already")

    def retry_link(self, run_id: str) -> RetryLink | None:
        """Run ``run_id``'s place in a retry chain; ``None`` when it retries no run."""
        row = self._fetchone(_statements(self.dialect).select_link, (run_id,))
        if row is None:
            return None
        return RetryLink(str(row[0]), str(row[1]), int(row[2]), float(row[3]))

    def retried_by(self, run_id: str) -> tuple[str, float] | None:
        """The run that retries ``run_id`` and when it is due; ``None``: none (yet)."""
        row = self._fetchone(_statements(self.dialect).select_retried_by, (run_id,))
        return None if row is None else (str(row[0]), float(row[1]))

    def failed_unretried(self, since: float, limit: int) -> list[RunRecord]:
        """Runs that ended ``failed`` after ``since`` and have no retry: oldest end first."""
        rows = self._fetchall(_statements(self.dialect).select_failed_unretried, (since, limit))
        return [self.get_run(str(r[0])) for r in rows]

    def started_schedule_runs(self) -> list[tuple[str, RunRecord]]:
        """(schedule, run) for every running or paused run that a schedule made."""
        rows = self._fetchall(_statements(self.dialect).select_started_ticks, ())
        return [(str(r[0]), self.get_run(str(r[1]))) for r in rows]

    def seen_objects(self, schedule: str) -> set[str]:
        """The object keys schedule ``schedule`` has recorded."""
        rows = self._fetchall(_statements(self.dialect).select_objects, (schedule,))
        return {str(r[0]) for r in rows}

    def object_of_run(self, run_id: str) -> tuple[str, str] | None:
        """(schedule, object URL) of the object that fired run ``run_id``; ``None``: none."""
        row = self._fetchone(_statements(self.dialect).select_object_of_run, (run_id,))
        return None if row is None else (str(row[0]), object_url(str(row[1])))

    def record_objects(self, schedule: str, keys: Sequence[str], now: float) -> None:
        """Record ``keys`` as seen without a run (present when the schedule began)."""
        if not keys:
            return
        with self._transaction() as cur:
            cur.executemany(
                _statements(self.dialect).insert_object, [(schedule, k, None, now) for k in keys]
            )
