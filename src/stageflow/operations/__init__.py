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
    access      tokens, roles, owners, the audit log (the API's callers)
    runs        list_runs (filters, cursor pages), show_run, run_timeline, task_logs
    commands    submit, start, resume, retry, cancel, pause, unpause, approve, reject
    reports     usage, cost, stats, lineage, diff, record
    pipelines   list_pipelines, pipeline_versions, pipeline_spec
    pools       set_pool, list_pools, remove_pool (global pools in the store)
    alerts      alert rules and alerts (``operations.alerts``, imported as a module)
    monitoring  metrics_history, current_metrics, export_text (the monitor's samples),
                pipeline_statistics, quality_gates (engine.reliability)
    notifications  list_notifications (the delivery log of runtime.notify)
    schedules   add_schedule, list_schedules, show_schedule, set_schedule_enabled,
                remove_schedule, trigger_schedule, fire_event (event schedules);
                start_backfill, backfill_status, list_backfills, cancel_backfill

Importing this package loads the store, the settings and the result records
only (what ``stageflow runs list`` loaded before); the runner, the engine, the
executors and the report arithmetic are imported inside the functions that
need them.
"""

from __future__ import annotations

from stageflow.operations.access import (
    AuditPage,
    CreatedToken,
    Identity,
    TokenInfo,
    audit_log,
    authenticate,
    check_confined,
    code_tasks,
    create_token,
    list_tokens,
    may,
    network_problems,
    path_problems,
    record_audit,
    revoke_token,
    sees,
)
from stageflow.operations.arguments import check_run_id, check_task_id, parse_instant
from stageflow.operations.commands import (
    ControlOutcome,
    SubmittedRun,
    approve,
    cancel,
    pause,
    reject,
    requeue_retry,
    resume,
    retry,
    start,
    submit,
    submit_saved,
    unpause,
)
from stageflow.operations.monitoring import (
    CurrentMetrics,
    GateReport,
    MetricsHistory,
    PipelineReliability,
    current_metrics,
    export_text,
    metrics_history,
    pipeline_statistics,
    quality_gates,
    time_range,
)
from stageflow.operations.notifications import (
    NOTIFICATION_STATES,
    NotificationInfo,
    list_notifications,
)
from stageflow.operations.pipelines import (
    Conflict,
    Forbidden,
    NotFound,
    PipelineGraph,
    PipelineSummary,
    PipelineVersion,
    PublishedPipeline,
    Validation,
    build_pipeline,
    delete_pipeline,
    list_pipelines,
    owned_pipeline,
    parse_spec,
    pipeline_graph,
    pipeline_spec,
    pipeline_versions,
    publish_pipeline,
    validate_spec,
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
    Artifact,
    LeaseStatus,
    LogFile,
    RunDetail,
    RunEventItem,
    RunFilter,
    RunPage,
    RunSummary,
    RunTimeline,
    TaskLogs,
    list_runs,
    paused_elsewhere,
    run_artifact,
    run_events,
    run_timeline,
    show_run,
    task_logs,
)
from stageflow.operations.schedules import (
    BackfillInfo,
    EventFired,
    ScheduleInfo,
    add_schedule,
    apply_schedules,
    backfill_status,
    cancel_backfill,
    check_spec_schedules,
    fire_event,
    list_backfills,
    list_schedules,
    remove_schedule,
    set_schedule_enabled,
    show_schedule,
    start_backfill,
    trigger_schedule,
)
from stageflow.operations.stores import (
    Store,
    artifacts_problem,
    check_store,
    open_for_service,
    reading,
    store_location,
    writing,
)

__all__ = [
    "NOTIFICATION_STATES",
    "Artifact",
    "AuditPage",
    "BackfillInfo",
    "Conflict",
    "ControlOutcome",
    "CostReport",
    "CreatedToken",
    "CurrentMetrics",
    "EventFired",
    "Forbidden",
    "GateReport",
    "Identity",
    "LeaseStatus",
    "Lineage",
    "LogFile",
    "MetricsHistory",
    "NotFound",
    "NotificationInfo",
    "PipelineGraph",
    "PipelineReliability",
    "PipelineSummary",
    "PipelineVersion",
    "PublishedPipeline",
    "RunDetail",
    "RunDiff",
    "RunEventItem",
    "RunFilter",
    "RunPage",
    "RunSummary",
    "RunTimeline",
    "ScheduleInfo",
    "Store",
    "SubmittedRun",
    "TaskLogs",
    "TokenInfo",
    "Validation",
    "add_schedule",
    "apply_schedules",
    "approve",
    "artifacts_problem",
    "audit_log",
    "authenticate",
    "backfill_status",
    "build_pipeline",
    "cancel",
    "cancel_backfill",
    "check_confined",
    "check_run_id",
    "check_spec_schedules",
    "check_store",
    "check_task_id",
    "code_tasks",
    "cost",
    "create_token",
    "current_metrics",
    "delete_pipeline",
    "diff",
    "export_text",
    "fire_event",
    "lineage",
    "list_backfills",
    "list_notifications",
    "list_pipelines",
    "list_pools",
    "list_runs",
    "list_schedules",
    "list_tokens",
    "may",
    "metrics_history",
    "network_problems",
    "open_for_service",
    "owned_pipeline",
    "parse_instant",
    "parse_spec",
    "path_problems",
    "pause",
    "paused_elsewhere",
    "pipeline_graph",
    "pipeline_spec",
    "pipeline_statistics",
    "pipeline_versions",
    "publish_pipeline",
    "quality_gates",
    "reading",
    "record",
    "record_audit",
    "reject",
    "remove_pool",
    "remove_schedule",
    "requeue_retry",
    "resume",
    "retry",
    "revoke_token",
    "run_artifact",
    "run_events",
    "run_timeline",
    "sees",
    "set_pool",
    "set_schedule_enabled",
    "show_run",
    "show_schedule",
    "start",
    "start_backfill",
    "stats",
    "store_location",
    "submit",
    "submit_saved",
    "task_logs",
    "time_range",
    "trigger_schedule",
    "unpause",
    "usage",
    "validate_spec",
    "writing",
]
