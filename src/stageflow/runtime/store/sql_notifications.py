"""Notification deliveries in SQL (schema 14): the delivery log of ``runtime.notify``.

``NotificationTables`` is a part of ``SqlStore`` (it inherits it). One row per
(notification key, channel index), unique: recording the same key again, in any
process, inserts nothing (``ON CONFLICT DO NOTHING``), so a notification is recorded
exactly once. A row is claimed for one try by a conditional update (compare-and-set
on its state and due time), never read-then-written, so of two processes that see it
due only one sends it; the claim lasts until ``claimed_until``, after which a claimer
that died leaves it due again. The end of a try is fenced by its attempt number: a
claimer whose claim was taken over writes nothing. Literal strings only: no value is
ever formatted into SQL.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.runtime.store.base import NotificationRecord

if TYPE_CHECKING:
    from stageflow.runtime.store.dialect import Cursor, Dialect

__all__ = ["NotificationTables"]

_COLUMNS = (
    "id, key, channel_index, created_at, kind, pipeline, run_id, task, owner, channel_kind, "
    "target, channel_json, message_json, state, attempts, last_error, next_try_at, "
    "claimed_until, delivered_at"
)


@dataclass(frozen=True, slots=True)
class _NotificationStatements:
    insert: str
    select_due: str
    claim: str
    select_one: str
    finish: str
    select_some: str


@functools.cache
def _statements(dialect: Dialect) -> _NotificationStatements:
    q = dialect.sql
    return _NotificationStatements(
        insert=q(
            "INSERT INTO notifications (key, channel_index, created_at, kind, pipeline, run_id, "
            "task, owner, channel_kind, target, channel_json, message_json, state, attempts, "
            "next_try_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?) "
            "ON CONFLICT (key, channel_index) DO NOTHING RETURNING id"
        ),
        # The partial index notifications_due: only unfinished rows are read.
        select_due=q(
            "SELECT id FROM notifications WHERE state IN ('pending', 'sending') AND "
            "((state = 'pending' AND next_try_at <= ?) OR "
            "(state = 'sending' AND claimed_until <= ?)) ORDER BY next_try_at, id LIMIT ?"
        ),
        claim=q(
            "UPDATE notifications SET state = 'sending', claimed_until = ?, "
            "attempts = attempts + 1 WHERE id = ? AND "
            "((state = 'pending' AND next_try_at <= ?) OR "
            "(state = 'sending' AND claimed_until <= ?))"
        ),
        select_one=q(f"SELECT {_COLUMNS} FROM notifications WHERE id = ?"),  # noqa: S608
        finish=q(
            "UPDATE notifications SET state = ?, last_error = ?, next_try_at = ?, "
            "claimed_until = NULL, delivered_at = ? WHERE id = ? AND state = 'sending' "
            "AND attempts = ?"
        ),
        # '' (and 1 for "any owner") turn a filter off: one literal statement.
        select_some=q(
            f"SELECT {_COLUMNS} FROM notifications WHERE (? = '' OR run_id = ?) "  # noqa: S608
            "AND (? = '' OR state = ?) "
            "AND (? = 1 OR owner = ? OR (? = 1 AND owner IS NULL)) "
            "ORDER BY id DESC LIMIT ?"
        ),
    )


def _record(row: Any) -> NotificationRecord:
    return NotificationRecord(
        id=int(row[0]),
        key=str(row[1]),
        channel_index=int(row[2]),
        created_at=float(row[3]),
        kind=str(row[4]),
        pipeline=row[5],
        run_id=row[6],
        task=row[7],
        owner=row[8],
        channel_kind=str(row[9]),
        target=str(row[10]),
        channel=json.loads(row[11]),
        message=json.loads(row[12]),
        state=str(row[13]),
        attempts=int(row[14]),
        last_error=row[15],
        next_try_at=None if row[16] is None else float(row[16]),
        claimed_until=None if row[17] is None else float(row[17]),
        delivered_at=None if row[18] is None else float(row[18]),
    )


class NotificationTables:
    """The delivery log (``Store`` methods; see the protocol's docstrings)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...

        def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any: ...

        def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

    def add_notifications(self, rows: Sequence[NotificationRecord]) -> list[int]:
        """Record each delivery unless its (key, channel index) is recorded already;
        the ids of those recorded now."""
        sql = _statements(self.dialect).insert
        added: list[int] = []
        with self._transaction() as cur:
            for r in rows:
                cur.execute(
                    sql,
                    (
                        r.key,
                        r.channel_index,
                        r.created_at,
                        r.kind,
                        r.pipeline,
                        r.run_id,
                        r.task,
                        r.owner,
                        r.channel_kind,
                        r.target,
                        json.dumps(r.channel, sort_keys=True),
                        json.dumps(r.message, sort_keys=True),
                        r.next_try_at if r.next_try_at is not None else r.created_at,
                    ),
                )
                found = cur.fetchone()
                if found is not None:
                    added.append(int(found[0]))
        return added

    def due_notifications(self, now: float, limit: int = 100) -> list[int]:
        """The deliveries due at ``now``, soonest first."""
        rows = self._fetchall(_statements(self.dialect).select_due, (now, now, limit))
        return [int(r[0]) for r in rows]

    def claim_notification(
        self, notification_id: int, now: float, until: float
    ) -> NotificationRecord | None:
        """Claim the delivery for one try (compare-and-set); the row, or ``None``."""
        s = _statements(self.dialect)
        with self._transaction() as cur:
            cur.execute(s.claim, (until, notification_id, now, now))
            if cur.rowcount != 1:
                return None
            cur.execute(s.select_one, (notification_id,))
            row = cur.fetchone()
        return None if row is None else _record(row)

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
        """End the claimed try; False when the claim was lost meanwhile."""
        delivered_at = now if state == "delivered" else None
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).finish,
                (state, error, next_try_at, delivered_at, notification_id, attempts),
            )
            return cur.rowcount == 1

    def notifications(
        self,
        *,
        run_id: str | None = None,
        state: str | None = None,
        owner: str | None = None,
        any_owner: bool = True,
        limit: int = 100,
    ) -> list[NotificationRecord]:
        """The deliveries matching every filter given, newest first."""
        run, st = run_id or "", state or ""
        params = (
            run,
            run,
            st,
            st,
            1 if any_owner else 0,
            owner or "",
            0 if any_owner or owner is not None else 1,
            limit,
        )
        rows = self._fetchall(_statements(self.dialect).select_some, params)
        return [_record(r) for r in rows]
