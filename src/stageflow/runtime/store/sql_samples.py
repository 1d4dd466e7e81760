"""Metric samples in SQL (schema 16): the monitor's gauges over time.

``SampleTables`` is a part of ``SqlStore`` (it inherits it), kept apart because
these rows serve the monitor (``runtime.monitor``), not runs. A sample is keyed by
(name, at, host, labels): ``at`` is the start of its sampling slot, ``host`` the
machine it describes (``''`` for the store's own gauges), so any number of processes
sampling the same slot write one row: ``add_samples`` inserts with ``ON CONFLICT DO
NOTHING`` and the first one wins. The primary key serves a name's time range; an
index on ``at`` serves the retention's delete and a range over every name. Literal
strings only: no value is ever formatted into SQL.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.runtime.store.base import MetricSample

if TYPE_CHECKING:
    from stageflow.runtime.store.dialect import Cursor, Dialect

__all__ = ["SampleTables"]

_COLUMNS = "name, at, host, labels_json, value"
_ORDER = "ORDER BY at, name, host, labels_json"


@dataclass(frozen=True, slots=True)
class _SampleStatements:
    insert: str
    select_name: str
    select_all: str
    select_latest: str
    delete_before: str
    select_names: str


@functools.cache
def _statements(dialect: Dialect) -> _SampleStatements:
    q = dialect.sql
    return _SampleStatements(
        insert=q(
            f"INSERT INTO metric_samples ({_COLUMNS}) VALUES (?, ?, ?, ?, ?) "  # noqa: S608
            "ON CONFLICT (name, at, host, labels_json) DO NOTHING"
        ),
        select_name=q(
            f"SELECT {_COLUMNS} FROM metric_samples WHERE name = ? AND at >= ? AND at <= ? "  # noqa: S608
            f"{_ORDER} LIMIT ?"
        ),
        select_all=q(
            f"SELECT {_COLUMNS} FROM metric_samples WHERE at >= ? AND at <= ? "  # noqa: S608
            f"{_ORDER} LIMIT ?"
        ),
        # The newest sample of every series (name, host, labels) at or after ?.
        select_latest=q(
            "SELECT s.name, s.at, s.host, s.labels_json, s.value FROM metric_samples s "
            "JOIN (SELECT name, host, labels_json, MAX(at) AS at FROM metric_samples "
            "WHERE at >= ? GROUP BY name, host, labels_json) m ON m.name = s.name "
            "AND m.host = s.host AND m.labels_json = s.labels_json AND m.at = s.at "
            "ORDER BY s.name, s.host, s.labels_json"
        ),
        delete_before=q("DELETE FROM metric_samples WHERE at < ?"),
        select_names=q("SELECT DISTINCT name FROM metric_samples ORDER BY name"),
    )


class SampleTables:
    """Metric samples (``Store`` methods; see the protocol's docstrings)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...

        def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

    def add_samples(self, samples: Sequence[MetricSample]) -> int:
        """Insert ``samples``, keeping a sample already stored under the same key; how
        many were new."""
        added = 0
        with self._transaction() as cur:
            sql = _statements(self.dialect).insert
            for s in samples:
                cur.execute(sql, (s.name, s.at, s.host, _labels_json(s.labels), s.value))
                added += max(0, cur.rowcount)
        return added

    def metric_samples(
        self, names: Sequence[str], since: float, until: float, limit: int = 1_000_000
    ) -> list[MetricSample]:
        """The samples of ``names`` (every name when empty) with ``since <= at <=
        until``, by time, then name, host and labels; at most ``limit``."""
        st = _statements(self.dialect)
        if not names:
            rows = self._fetchall(st.select_all, (since, until, limit))
        else:
            rows = []
            for name in dict.fromkeys(names):
                rows.extend(self._fetchall(st.select_name, (name, since, until, limit)))
            rows.sort(key=lambda r: (float(r[1]), str(r[0]), str(r[2]), str(r[3])))
            rows = rows[:limit]
        return [_sample(row) for row in rows]

    def latest_samples(self, since: float) -> list[MetricSample]:
        """The newest sample of each series (name, host, labels) sampled at or after
        ``since``, by name, host and labels."""
        return [
            _sample(r) for r in self._fetchall(_statements(self.dialect).select_latest, (since,))
        ]

    def delete_samples_before(self, before: float) -> int:
        """Delete the samples with ``at < before``; how many went."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).delete_before, (before,))
            return max(0, cur.rowcount)

    def sample_names(self) -> list[str]:
        """The names that have samples, sorted."""
        return [str(n) for (n,) in self._fetchall(_statements(self.dialect).select_names, ())]


def _labels_json(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _sample(row: Any) -> MetricSample:
    name, at, host, labels_json, value = row
    labels = json.loads(labels_json or "{}")
    return MetricSample(
        str(name),
        float(at),
        float(value),
        str(host),
        {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
    )
