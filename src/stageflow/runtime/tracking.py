"""Experiment tracking: a finished pipeline run logged as one MLflow run.

On when ``Settings.tracking`` is (``stageflow run --track``,
``STAGEFLOW_TRACKING=1``). When the run ends, ``log_run`` creates an MLflow run
in the experiment ``STAGEFLOW_MLFLOW_EXPERIMENT`` (default ``stageflow``) on the
configured tracking URI (default: the SQLite store in the state folder) with

* the run's parameters and seeds as params;
* every metric the tasks recorded, prefixed by task id (``evaluate.accuracy``),
  and each task's duration;
* the reports and pictures the tasks wrote, under a folder per task, and the
  reproducibility record as ``stageflow/record.json``;
* tags linking back: ``stageflow.run_id``, ``stageflow.pipeline``,
  ``stageflow.pipeline_version``, the git commit and dirty flag.

MLflow runs that operators created during the run (``model_registration``
tags its run with ``stageflow.run_id``) become its children
(``mlflow.parentRunId``), so the registered model sits under the pipeline run.
Logging after the fact keeps MLflow out of the run loop; a failure to log is
reported in the record, never fails the run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stageflow.operators.ml import _mlflow
from stageflow.runtime.result import RunResult
from stageflow.runtime.settings import Settings
from stageflow.spec.models import Pipeline

__all__ = ["log_run"]

logger = logging.getLogger(__name__)

_STATUS = {"success": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
_LOGGED_KINDS = ("report", "picture")


def log_run(
    settings: Settings, pipeline: Pipeline, result: RunResult, record: Mapping[str, Any]
) -> dict[str, Any]:
    """Log ``result`` as an MLflow run; return where it went (or the error)."""
    uri = _mlflow.tracking_uri(settings.mlflow_tracking_uri, settings.home)
    try:
        return _log(uri, pipeline, result, record)
    except Exception as exc:  # tracking must never fail the run
        logger.warning("run %s: could not log to MLflow: %s", result.run_id, exc)
        return {"tracking_uri": _mlflow.mask_uri(uri), "error": f"{type(exc).__name__}: {exc}"}


def _log(
    uri: str, pipeline: Pipeline, result: RunResult, record: Mapping[str, Any]
) -> dict[str, Any]:
    from mlflow.entities import Metric, Param

    c = _mlflow.client(uri)
    experiment = _mlflow.experiment_name(None)
    exp = _mlflow.experiment_id(c, experiment, uri)
    code = record.get("code") or {}
    spec = record.get("spec") or {}
    tags = {
        "mlflow.runName": f"{pipeline.name} {result.run_id}",
        "stageflow.run_id": result.run_id,
        "stageflow.pipeline": pipeline.name,
        "stageflow.pipeline_version": str(spec.get("version")),
        "stageflow.kind": "pipeline",
        "stageflow.state": result.state,
    }
    if spec.get("source"):
        tags["mlflow.source.name"] = str(spec["source"])
    if code.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(code["git_commit"])
        tags["stageflow.git_dirty"] = str(bool(code.get("git_dirty"))).lower()
    started = int((result.started_at or time.time()) * 1000)
    run = c.create_run(exp, start_time=started, tags=tags)
    run_id = run.info.run_id
    params = [Param(str(k)[:250], _text(v)) for k, v in (record.get("params") or {}).items()]
    params += [Param(f"seed.{k}"[:250], _text(v)) for k, v in (record.get("seeds") or {}).items()]
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{tid}.{name}"[:250], float(value), now, 0)
        for tid, meta in (record.get("tasks") or {}).items()
        for name, value in (meta.get("metrics") or {}).items()
    ]
    metrics += [
        Metric(f"{tid}.duration_s"[:250], float(t.duration_s), now, 0)
        for tid, t in result.tasks.items()
        if t.duration_s is not None
    ]
    for start in range(0, max(len(params), len(metrics)), 100):
        c.log_batch(
            run_id, metrics=metrics[start : start + 100], params=params[start : start + 100]
        )
    logged = 0
    for tid, meta in (record.get("tasks") or {}).items():
        for item in meta.get("writes") or []:
            path = Path(str(item.get("uri", "")))
            if item.get("kind") in _LOGGED_KINDS and path.is_absolute() and path.is_file():
                c.log_artifact(run_id, str(path), artifact_path=tid)
                logged += 1
    c.log_text(run_id, json.dumps(record, indent=2, default=str), "stageflow/record.json")
    children = c.search_runs(
        [exp],
        filter_string=f"tags.`stageflow.run_id` = '{result.run_id}' "
        "and tags.`stageflow.kind` = 'task'",
        max_results=1000,
    )
    for child in children:
        c.set_tag(child.info.run_id, "mlflow.parentRunId", run_id)
    ended = int((result.ended_at or time.time()) * 1000)
    c.set_terminated(run_id, status=_STATUS.get(result.state, "FINISHED"), end_time=ended)
    logger.info("run %s logged to MLflow run %s (%s)", result.run_id, run_id, experiment)
    return {
        "mlflow_run_id": run_id,
        "experiment": experiment,
        "experiment_id": exp,
        "tracking_uri": _mlflow.mask_uri(uri),
        "metrics": len(metrics),
        "artifacts": logged,
        "children": [r.info.run_id for r in children],
    }


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]
