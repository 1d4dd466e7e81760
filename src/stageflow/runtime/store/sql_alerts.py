"""Alert rules and alerts in SQL (schema 15).

``AlertTables`` is a part of ``SqlStore`` (it inherits it), kept apart because these
tables serve alerting (``runtime.alerting``, ``operations.alerts``), not runs. Opening
an alert is ONE insert that two unique indexes guard: ``alerts_one_active`` (a partial
index: one open or acknowledged alert per rule and subject) and ``dedup_key`` (one
alert per deadline key, for ever); ``ON CONFLICT DO NOTHING`` and the row count tell a
process whether it opened the alert, so of any number of processes evaluating one
rule, exactly one opens it and notifies. A move (acknowledge, resolve) is a
compare-and-set on the state read. Literal strings only: no value is ever formatted
into SQL; an optional filter is ``(CAST(? AS TEXT) IS NULL OR column = ?)``.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.runtime.store.base import AlertRecord, AlertRuleRecord

if TYPE_CHECKING:
    from stageflow.runtime.store.dialect import Cursor, Dialect

__all__ = ["AlertTables"]

_RULE_COLUMNS = (
    "rule_id, pipeline, task, metric, condition, threshold_json, severity, cooldown_seconds, "
    "window_seconds, k, runs, enabled, description, channels_json, owner, source, created_at, "
    "updated_at"
)
_ALERT_COLUMNS = (
    "alert_id, rule_id, subject, state, severity, message, opened_at, value_json, pipeline, "
    "run_id, task, owner, channels_json, dedup_key, acknowledged_by, acknowledged_at, "
    "resolved_by, resolved_at"
)


@dataclass(frozen=True, slots=True)
class _AlertStatements:
    upsert_rule: str
    select_rule: str
    select_rules: str
    delete_rule: str
    set_rule_enabled: str
    insert_alert: str
    select_active: str
    select_last_opened: str
    select_alert: str
    select_alerts: str
    acknowledge: str
    resolve: str


@functools.cache
def _statements(dialect: Dialect) -> _AlertStatements:
    q = dialect.sql
    return _AlertStatements(
        upsert_rule=q(
            f"INSERT INTO alert_rules ({_RULE_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (rule_id) DO UPDATE SET pipeline = excluded.pipeline, "
            "task = excluded.task, metric = excluded.metric, condition = excluded.condition, "
            "threshold_json = excluded.threshold_json, severity = excluded.severity, "
            "cooldown_seconds = excluded.cooldown_seconds, "
            "window_seconds = excluded.window_seconds, k = excluded.k, runs = excluded.runs, "
            "enabled = excluded.enabled, description = excluded.description, "
            "channels_json = excluded.channels_json, owner = excluded.owner, "
            "source = excluded.source, updated_at = excluded.updated_at"
        ),
        select_rule=q(f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE rule_id = ?"),  # noqa: S608
        select_rules=q(
            f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE (? = 0 OR enabled = 1) "  # noqa: S608
            "AND (CAST(? AS TEXT) IS NULL OR pipeline = ?) ORDER BY rule_id"
        ),
        delete_rule=q("DELETE FROM alert_rules WHERE rule_id = ?"),
        set_rule_enabled=q("UPDATE alert_rules SET enabled = ?, updated_at = ? WHERE rule_id = ?"),
        insert_alert=q(
            f"INSERT INTO alerts ({_ALERT_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING"
        ),
        select_active=q(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule_id = ? AND subject = ? "  # noqa: S608
            "AND state <> 'resolved'"
        ),
        select_last_opened=q("SELECT MAX(opened_at) FROM alerts WHERE rule_id = ? AND subject = ?"),
        select_alert=q(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = ?"),  # noqa: S608
        select_alerts=q(
            f"SELECT {_ALERT_COLUMNS} FROM alerts "  # noqa: S608
            "WHERE (CAST(? AS TEXT) IS NULL OR state = ?) "
            "AND (CAST(? AS TEXT) IS NULL OR severity = ?) "
            "AND (CAST(? AS TEXT) IS NULL OR rule_id = ?) "
            "ORDER BY opened_at DESC, alert_id DESC LIMIT ?"
        ),
        acknowledge=q(
            "UPDATE alerts SET state = ?, acknowledged_by = ?, acknowledged_at = ? "
            "WHERE alert_id = ? AND state = ?"
        ),
        resolve=q(
            "UPDATE alerts SET state = ?, resolved_by = ?, resolved_at = ? "
            "WHERE alert_id = ? AND state = ?"
        ),
    )


def _rule(row: Any) -> AlertRuleRecord:
    return AlertRuleRecord(
        rule_id=str(row[0]),
        pipeline=row[1],
        task=row[2],
        metric=str(row[3]),
        condition=str(row[4]),
        threshold=json.loads(row[5]),
        severity=str(row[6]),
        cooldown_seconds=float(row[7]),
        window_seconds=float(row[8]),
        k=float(row[9]),
        runs=int(row[10]),
        enabled=bool(row[11]),
        description=str(row[12]),
        channels=json.loads(row[13]),
        owner=row[14],
        source=str(row[15]),
        created_at=float(row[16]),
        updated_at=float(row[17]),
    )


def _alert(row: Any) -> AlertRecord:
    return AlertRecord(
        alert_id=str(row[0]),
        rule_id=str(row[1]),
        subject=str(row[2]),
        state=str(row[3]),
        severity=str(row[4]),
        message=str(row[5]),
        opened_at=float(row[6]),
        value=None if row[7] is None else json.loads(row[7]),
        pipeline=row[8],
        run_id=row[9],
        task=row[10],
        owner=row[11],
        channels=json.loads(row[12]),
        dedup_key=row[13],
        acknowledged_by=row[14],
        acknowledged_at=None if row[15] is None else float(row[15]),
        resolved_by=row[16],
        resolved_at=None if row[17] is None else float(row[17]),
    )


class AlertTables:
    """Alert rules and alerts (``Store`` methods; see the protocol's docstrings)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...

        def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any: ...

        def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

    def put_alert_rule(self, rule: AlertRuleRecord) -> None:
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).upsert_rule,
                (
                    rule.rule_id,
                    rule.pipeline,
                    rule.task,
                    rule.metric,
                    rule.condition,
                    json.dumps(rule.threshold),
                    rule.severity,
                    rule.cooldown_seconds,
                    rule.window_seconds,
                    rule.k,
                    rule.runs,
                    1 if rule.enabled else 0,
                    rule.description,
                    json.dumps(rule.channels, sort_keys=True),
                    rule.owner,
                    rule.source,
                    rule.created_at,
                    rule.updated_at,
                ),
            )

    def get_alert_rule(self, rule_id: str) -> AlertRuleRecord | None:
        row = self._fetchone(_statements(self.dialect).select_rule, (rule_id,))
        return None if row is None else _rule(row)

    def alert_rules(
        self, *, enabled_only: bool = False, pipeline: str | None = None
    ) -> list[AlertRuleRecord]:
        rows = self._fetchall(
            _statements(self.dialect).select_rules,
            (1 if enabled_only else 0, pipeline, pipeline),
        )
        return [_rule(r) for r in rows]

    def delete_alert_rule(self, rule_id: str) -> bool:
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).delete_rule, (rule_id,))
            return bool(cur.rowcount)

    def set_alert_rule_enabled(self, rule_id: str, enabled: bool, now: float) -> bool:
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).set_rule_enabled, (1 if enabled else 0, now, rule_id)
            )
            return bool(cur.rowcount)

    def open_alert(self, alert: AlertRecord) -> bool:
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).insert_alert,
                (
                    alert.alert_id,
                    alert.rule_id,
                    alert.subject,
                    "open",
                    alert.severity,
                    alert.message,
                    alert.opened_at,
                    None if alert.value is None else json.dumps(alert.value),
                    alert.pipeline,
                    alert.run_id,
                    alert.task,
                    alert.owner,
                    json.dumps(alert.channels, sort_keys=True),
                    alert.dedup_key,
                    None,
                    None,
                    None,
                    None,
                ),
            )
            return bool(cur.rowcount)

    def active_alert(self, rule_id: str, subject: str) -> AlertRecord | None:
        row = self._fetchone(_statements(self.dialect).select_active, (rule_id, subject))
        return None if row is None else _alert(row)

    def last_alert_opened(self, rule_id: str, subject: str) -> float | None:
        row = self._fetchone(_statements(self.dialect).select_last_opened, (rule_id, subject))
        return None if row is None or row[0] is None else float(row[0])

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        row = self._fetchone(_statements(self.dialect).select_alert, (alert_id,))
        return None if row is None else _alert(row)

    def alerts(
        self,
        *,
        state: str | None = None,
        severity: str | None = None,
        rule_id: str | None = None,
        limit: int = 100,
    ) -> list[AlertRecord]:
        rows = self._fetchall(
            _statements(self.dialect).select_alerts,
            (state, state, severity, severity, rule_id, rule_id, limit),
        )
        return [_alert(r) for r in rows]

    def move_alert(
        self, alert_id: str, from_state: str, to_state: str, *, by: str, now: float
    ) -> bool:
        s = _statements(self.dialect)
        sql = s.acknowledge if to_state == "acknowledged" else s.resolve
        with self._transaction() as cur:
            cur.execute(sql, (to_state, by, now, alert_id, from_state))
            return bool(cur.rowcount)
