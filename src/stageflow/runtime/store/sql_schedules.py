"""Schedules in SQL (schema 13): what fires runs, and which run each tick made.

``ScheduleTables`` is a part of ``SqlStore`` (it inherits it), kept apart because
these tables serve the scheduler, not a run's step. A schedule row holds its kind's
fields as JSON (``engine.schedules.ScheduleSpec``), the run parameters, priority,
``max_active_runs``, whether it is enabled, ``last_tick``: the logical time it last
fired, which only moves forward (a conditional update), and ``next_at``: when it
fires next (``None``: never again), which a pass of the loop reads on a partial
index, so 10,000 schedules cost a pass nothing until one is due. ``schedule_runs`` has
one row per fired tick, keyed by (schedule, logical time) and written in the run's
own creating transaction (``SqlStore.create_run(tick=...)``): of any number of
scheduler processes firing the same tick, exactly one creates its run, the others
meet the key and create nothing (``TickTaken``). Literal strings only: no value is
ever formatted into SQL.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.errors import TickTaken
from stageflow.runtime.store.base import (
    PipelineRecord,
    RunRecord,
    ScheduleRecord,
    Tick,
    TickOutcome,
    TickRun,
)

if TYPE_CHECKING:
    from stageflow.runtime.store.dialect import Cursor, Dialect

__all__ = ["ScheduleTables"]

_COLUMNS = (
    "name, pipeline, spec_json, params_json, priority, max_active_runs, enabled, last_tick, "
    "owner, created_at, updated_at, next_at"
)


@dataclass(frozen=True, slots=True)
class _ScheduleStatements:
    upsert: str
    select_one: str
    select_all: str
    select_enabled: str
    select_due: str
    select_next: str
    delete: str
    set_enabled: str
    advance: str
    delete_run: str
    insert_tick: str
    select_tick: str
    select_tick_of_run: str
    select_ticks: str
    count_active: str
    select_ended: str


@functools.cache
def _statements(dialect: Dialect) -> _ScheduleStatements:
    q = dialect.sql
    return _ScheduleStatements(
        # A schedule applied again keeps where it got to (last_tick) and its creation.
        upsert=q(
            f"INSERT INTO schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
            "ON CONFLICT (name) DO UPDATE SET pipeline = excluded.pipeline, "
            "spec_json = excluded.spec_json, params_json = excluded.params_json, "
            "priority = excluded.priority, max_active_runs = excluded.max_active_runs, "
            "enabled = excluded.enabled, owner = excluded.owner, "
            "updated_at = excluded.updated_at, next_at = excluded.next_at"
        ),
        select_one=q(f"SELECT {_COLUMNS} FROM schedules WHERE name = ?"),  # noqa: S608
        select_all=q(f"SELECT {_COLUMNS} FROM schedules ORDER BY name"),  # noqa: S608
        select_enabled=q(f"SELECT {_COLUMNS} FROM schedules WHERE enabled = 1 ORDER BY name"),  # noqa: S608
        # The partial index schedules_due: a pass reads only the schedules due now.
        select_due=q(
            f"SELECT {_COLUMNS} FROM schedules WHERE enabled = 1 AND next_at <= ? "  # noqa: S608
            "ORDER BY next_at, name"
        ),
        select_next=q("SELECT MIN(next_at) FROM schedules WHERE enabled = 1 AND next_at > ?"),
        delete=q("DELETE FROM schedules WHERE name = ?"),
        set_enabled=q("UPDATE schedules SET enabled = ?, updated_at = ? WHERE name = ?"),
        advance=q(
            "UPDATE schedules SET last_tick = ?, next_at = ? WHERE name = ? "
            "AND (last_tick IS NULL OR last_tick < ?)"
        ),
        delete_run=q("DELETE FROM runs WHERE run_id = ?"),
        insert_tick=q(
            "INSERT INTO schedule_runs (schedule, logical_time, run_id, interval_start) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (schedule, logical_time) DO NOTHING"
        ),
        select_tick_of_run=q(
            "SELECT schedule, logical_time, interval_start FROM schedule_runs WHERE run_id = ?"
        ),
        select_tick=q("SELECT run_id FROM schedule_runs WHERE schedule = ? AND logical_time = ?"),
        select_ticks=q(
            "SELECT logical_time, run_id FROM schedule_runs WHERE schedule = ? "
            "ORDER BY logical_time DESC LIMIT ?"
        ),
        count_active=q(
            "SELECT COUNT(*) FROM schedule_runs s JOIN runs r ON r.run_id = s.run_id "
            "WHERE s.schedule = ? AND r.state IN ('queued', 'running', 'paused')"
        ),
        # Three state slots (the end states an ``after`` schedule may name); fewer states
        # fill the rest with the first one again: the SQL stays one literal string.
        select_ended=q(
            "SELECT run_id, ended_at FROM runs WHERE pipeline = ? AND state IN (?, ?, ?) "
            "AND ended_at IS NOT NULL AND ended_at > ? ORDER BY ended_at, run_id LIMIT ?"
        ),
    )


def _record(row: Any) -> ScheduleRecord:
    return ScheduleRecord(
        name=str(row[0]),
        pipeline=str(row[1]),
        spec=json.loads(row[2]),
        params=json.loads(row[3]),
        priority=int(row[4]),
        max_active_runs=None if row[5] is None else int(row[5]),
        enabled=bool(row[6]),
        last_tick=None if row[7] is None else float(row[7]),
        owner=row[8],
        created_at=float(row[9]),
        updated_at=float(row[10]),
        next_at=None if row[11] is None else float(row[11]),
    )


class ScheduleTables:
    """Schedules and their fired ticks (``Store`` methods; see the protocol's docstrings)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...

        def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any: ...

        def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

        def _insert_pipeline(self, cur: Cursor, pipeline: PipelineRecord) -> None: ...

        def _insert_run_row(self, cur: Cursor, run: RunRecord) -> bool: ...

    def create_tick_runs(self, items: Sequence[TickRun]) -> list[TickOutcome]:
        """See ``Store.create_tick_runs``. Each run's row, then its tick (a tick another
        scheduler fired first takes the run's row back); then, for all of them at once,
        the created runs' pending task runs and the schedules' moves."""
        outcomes: list[TickOutcome] = []
        saved: set[tuple[str, str]] = set()  # pipeline versions written in this batch
        statements = _statements(self.dialect)
        dialect = self.dialect
        pending: list[tuple[str, Any]] = []
        advances: list[tuple[float, float | None, str, float]] = []
        with self._transaction() as cur:
            for item in items:
                version = (item.pipeline.name, item.pipeline.version)
                if version not in saved:
                    self._insert_pipeline(cur, item.pipeline)
                    saved.add(version)
                run_id = item.run.run_id
                if not self._insert_run_row(cur, item.run):
                    outcomes.append("id_taken")  # nothing written: drawn again
                    continue
                name, at, begins = item.tick
                cur.execute(statements.insert_tick, (name, at, run_id, begins))
                if cur.rowcount:
                    outcomes.append("created")
                    if item.task_ids:
                        pending.append((run_id, dialect.text_list(list(item.task_ids))))
                else:
                    cur.execute(statements.delete_run, (run_id,))
                    outcomes.append("taken")
                advances.append((at, item.next_at, name, at))
            if pending:
                cur.executemany(dialect.insert_pending_bulk, pending)
            cur.executemany(statements.advance, advances)
        return outcomes

    def _record_tick(self, cur: Cursor, tick: Tick, run_id: str) -> None:
        """In ``create_run``'s transaction: the tick made ``run_id``; ``TickTaken`` (the
        transaction rolls back) when another scheduler fired it first."""
        begins = tick[2] if len(tick) > 2 else tick[1]
        cur.execute(_statements(self.dialect).insert_tick, (tick[0], tick[1], run_id, begins))
        if not cur.rowcount:
            raise TickTaken(f"schedule '{tick[0]}' fired its tick at {tick[1]} already")

    def tick_of_run(self, run_id: str) -> tuple[str, float, float] | None:
        """The tick that made run ``run_id``: (schedule, logical time, data interval
        start); ``None`` when a schedule's tick did not make it."""
        row = self._fetchone(_statements(self.dialect).select_tick_of_run, (run_id,))
        if row is None:
            return None
        at = float(row[1])
        return str(row[0]), at, at if row[2] is None else float(row[2])

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        """Create ``schedule``, or change the one of that name (its ``last_tick`` and
        ``created_at`` stay)."""
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).upsert,
                (
                    schedule.name,
                    schedule.pipeline,
                    json.dumps(schedule.spec, sort_keys=True),
                    json.dumps(schedule.params, sort_keys=True),
                    schedule.priority,
                    schedule.max_active_runs,
                    1 if schedule.enabled else 0,
                    schedule.last_tick,
                    schedule.owner,
                    schedule.created_at,
                    schedule.updated_at,
                    schedule.next_at,
                ),
            )

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule ``name``; ``None`` when there is none."""
        row = self._fetchone(_statements(self.dialect).select_one, (name,))
        return None if row is None else _record(row)

    def schedules(self, *, enabled_only: bool = False) -> list[ScheduleRecord]:
        """Every schedule (only the enabled ones), by name."""
        s = _statements(self.dialect)
        return [
            _record(r)
            for r in self._fetchall(s.select_enabled if enabled_only else s.select_all, ())
        ]

    def due_schedules(self, now: float) -> list[ScheduleRecord]:
        """The enabled schedules whose next fire time is at ``now`` or before, soonest
        first (an index read: the others cost nothing)."""
        rows = self._fetchall(_statements(self.dialect).select_due, (now,))
        return [_record(r) for r in rows]

    def next_fire_after(self, now: float) -> float | None:
        """The soonest next fire time of an enabled schedule after ``now`` (an index
        read); ``None``: none."""
        row = self._fetchone(_statements(self.dialect).select_next, (now,))
        return None if row is None or row[0] is None else float(row[0])

    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule (its runs stay, and their ticks); False when there is none."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).delete, (name,))
            return bool(cur.rowcount)

    def set_schedule_enabled(self, name: str, enabled: bool, now: float) -> bool:
        """Enable (resume) or disable (pause) the schedule; False when there is none."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).set_enabled, (1 if enabled else 0, now, name))
            return bool(cur.rowcount)

    def advance_schedule(self, name: str, tick: float, next_at: float | None) -> bool:
        """Move the schedule's ``last_tick`` on to ``tick`` (and its next fire time to
        ``next_at``) unless it is there or beyond already; False when it did not move."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).advance, (tick, next_at, name, tick))
            return bool(cur.rowcount)

    def tick_run(self, schedule: str, logical_time: float) -> str | None:
        """The run that the schedule's tick at ``logical_time`` created; ``None``: none."""
        row = self._fetchone(_statements(self.dialect).select_tick, (schedule, logical_time))
        return None if row is None else str(row[0])

    def schedule_runs(self, schedule: str, limit: int = 10) -> list[tuple[float, str]]:
        """The schedule's latest fired ticks: (logical time, run id), newest first."""
        rows = self._fetchall(_statements(self.dialect).select_ticks, (schedule, limit))
        return [(float(t), str(r)) for t, r in rows]

    def ended_runs_after(
        self, pipeline: str, states: Sequence[str], after: float, limit: int
    ) -> list[tuple[str, float]]:
        """The runs of ``pipeline`` that ended in one of ``states`` (at most three: the
        end states) strictly after ``after``: (run id, ended at), oldest end first, at
        most ``limit`` (what an ``after`` schedule fires on)."""
        wanted = list(dict.fromkeys(states))
        if not wanted or limit < 1:
            return []
        if len(wanted) > 3:
            raise ValueError(f"at most 3 end states, got {wanted!r}")
        slots = (wanted + [wanted[0]] * 3)[:3]
        rows = self._fetchall(
            _statements(self.dialect).select_ended, (pipeline, *slots, after, limit)
        )
        return [(str(run_id), float(ended)) for run_id, ended in rows]

    def active_schedule_runs(self, schedule: str) -> int:
        """How many runs the schedule made are unfinished (queued, running, paused)."""
        row = self._fetchone(_statements(self.dialect).count_active, (schedule,))
        return int(row[0]) if row else 0
