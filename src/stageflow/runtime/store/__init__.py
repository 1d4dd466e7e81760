"""The metadata store: pipelines, runs, task runs, attempts, events, outputs.

``open_store(url, home)`` opens SQLite (the default, embedded) or PostgreSQL and
migrates it; everything else talks to the :class:`Store` protocol (``base.py``).
The SQL lives in ``sql.py``, the schema in ``migrations.py``, the differences
between databases in ``dialect.py``, URL forms in ``url.py``.
"""

from __future__ import annotations

from stageflow.runtime.store.base import (
    AttemptRecord,
    AuditEntry,
    Batch,
    EventRecord,
    Fence,
    OutputRef,
    PipelineRecord,
    RecordText,
    RunRecord,
    RunUpdate,
    Store,
    TaskRunRecord,
    TaskRunStat,
    TokenRecord,
)
from stageflow.runtime.store.sql import SqlStore
from stageflow.runtime.store.url import mask_url, open_store

__all__ = [
    "AttemptRecord",
    "AuditEntry",
    "Batch",
    "EventRecord",
    "Fence",
    "OutputRef",
    "PipelineRecord",
    "RecordText",
    "RunRecord",
    "RunUpdate",
    "SqlStore",
    "Store",
    "TaskRunRecord",
    "TaskRunStat",
    "TokenRecord",
    "mask_url",
    "open_store",
]
