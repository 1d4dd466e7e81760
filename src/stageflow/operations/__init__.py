"""The operations layer: typed commands and queries over the runtime.

Every interface (the CLI today, the REST API next) calls these functions and
renders what they return; none of them prints, parses command-line text or
holds SQL. Arguments are plain values (a ``Settings``, an opened ``Store``, run
ids, filters, the time); results are dataclasses with ``as_json()``; every user
mistake is a ``StageflowError`` subclass whose message names the run, task or
field and the fix (``UsageError`` for a bad argument, ``RunNotFound``,
``ControlRefused``, ``InvalidSpec``, ...).

::

    arguments   check_run_id, check_task_id, parse_instant
    stores      reading / writing (an opened store), check_store, store_location
    runs        list_runs (filters, cursor pages), show_run, run_timeline, task_logs
    commands    submit, start, resume, retry, cancel, pause, unpause, approve, reject
    reports     usage, cost, stats, lineage, diff, record
    pipelines   list_pipelines, pipeline_versions, pipeline_spec
    pools       set_pool, list_pools, remove_pool (global pools in the store)

Importing this package loads the store, the settings and the result records
only (what ``stageflow runs list`` loaded before); the runner, the engine, the
executors and the report arithmetic are imported inside the functions that
need them.
"""

from __future__ import annotations

from stageflow.operations.arguments import check_run_id, check_task_id, parse_instant
from stageflow.operations.commands import (
    ControlOutcome,
    SubmittedRun,
    approve,
    cancel,
    pause,
    reject,
    resume,
    retry,
    start,
    submit,
    unpause,
)
from stageflow.operations.pipelines import (
    PipelineSummary,
    PipelineVersion,
    list_pipelines,
    pipeline_spec,
    pipeline_versions,
)
from stageflow.operations.pools import list_pools, remove_pool, set_pool
from stageflow.operations.reports import (
    CostReport,
    Lineage,
    RunDiff,
    cost,
    diff,
    lineage,
    record,
    stats,
    usage,
)
from stageflow.operations.runs import (
    LeaseStatus,
    LogFile,
    RunDetail,
    RunFilter,
    RunPage,
    RunSummary,
    RunTimeline,
    TaskLogs,
    list_runs,
    paused_elsewhere,
    run_timeline,
    show_run,
    task_logs,
)
from stageflow.operations.stores import check_store, reading, store_location, writing

__all__ = [
    "ControlOutcome",
    "CostReport",
    "LeaseStatus",
    "Lineage",
    "LogFile",
    "PipelineSummary",
    "PipelineVersion",
    "RunDetail",
    "RunDiff",
    "RunFilter",
    "RunPage",
    "RunSummary",
    "RunTimeline",
    "SubmittedRun",
    "TaskLogs",
    "approve",
    "cancel",
    "check_run_id",
    "check_store",
    "check_task_id",
    "cost",
    "diff",
    "lineage",
    "list_pipelines",
    "list_pools",
    "list_runs",
    "parse_instant",
    "pause",
    "paused_elsewhere",
    "pipeline_spec",
    "pipeline_versions",
    "reading",
    "record",
    "reject",
    "remove_pool",
    "resume",
    "retry",
    "run_timeline",
    "set_pool",
    "show_run",
    "start",
    "stats",
    "store_location",
    "submit",
    "task_logs",
    "unpause",
    "usage",
    "writing",
]
