"""Model selection, registration, deployment and batch scoring (the MLflow registry side).

* ``model_selection`` ranks upstream evaluations by a metric and passes the
  best on (seed 001's A/B pattern: "Model A, Model B -> Comparison -> Best
  Model Registration"); ties keep the order of ``upstream``. An upstream
  whose output is a list (a task mapped with ``map_over:``, e.g. one
  evaluation per ``search_space`` candidate) counts as its elements, in
  element order, each named by its own task run (``evaluate[3]``). With no
  evaluation upstream it ranks trained models (``model_training`` outputs)
  by a training metric instead: ``cv_mean`` (needs ``cross_validation``)
  or else the test score (``test_accuracy``, ``test_r2``) unless ``metric``
  names another.
* ``model_registration`` logs the model to an MLflow run (tagged with the
  stageflow run and task) and registers a new version under ``model_name``,
  with a description, tags, the evaluation metrics as ``metric.NAME`` tags
  and an optional ``alias`` (e.g. ``staging``). ``only_if_better_than: ALIAS``
  registers only a model that beats the version under that alias.
* ``model_deployment`` points an alias (``production``) at a registered
  version, first moving the version it held to ``<alias>-previous`` for
  rollback (``rollback: true`` swaps them back); ``only_if_better_than``
  gates it too.
* ``batch_inference`` scores a dataset with a model — an upstream model, or a
  registered one by ``NAME@ALIAS`` / ``NAME/VERSION`` — and returns the rows
  with a ``prediction`` column (and ``proba_<class>`` columns), also written
  as ``predictions.parquet`` (and to ``to`` when given).

The gate ("does the candidate beat the champion?") compares on the
evaluation's primary metric (or ``metric``): with the champion's score on the
same rows when the upstream evaluation measured it (``champion:``), else with
the ``metric.NAME`` tag the champion was registered with. No champion yet: the
candidate passes. A tie keeps the champion. A champion that cannot be compared
— it cannot score the candidate's rows, or it was registered with other
columns or another target (the version tag ``stageflow.schema``) — keeps its
place too, with that reason, unless the task sets ``allow_schema_change: true``.

Example::

    - id: register
      operator: model_registration
      upstream: [select_best]
      parameters: {model_name: fraud-detector, alias: staging, tags: {team: risk}}
    - id: promote
      operator: model_deployment
      upstream: [register]
      parameters: {alias: production, only_if_better_than: production}
    - id: score
      operator: batch_inference
      upstream: [features, promote]
      parameters: {model: fraud-detector@production, split: holdout}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.metadata import record
from stageflow.operators.ml import _mlflow
from stageflow.operators.ml._common import (
    MLOperator,
    is_features,
    is_frame,
    is_model,
    need,
    pick,
    put_file,
    round_outputs,
)
from stageflow.operators.ml.evaluation import LOWER_IS_BETTER, better
from stageflow.operators.ml.ingestion import frame_hash, read_table, write_table
from stageflow.operators.ml.training import default_metric
from stageflow.operators.registry import register

__all__ = [
    "SCHEMA_TAG",
    "BatchInference",
    "ModelDeployment",
    "ModelRegistration",
    "ModelSelection",
    "gate",
    "schema_of",
]

_STRICT = ConfigDict(extra="forbid", populate_by_name=True)
# The version tag holding ``schema_of`` the registered model.
SCHEMA_TAG = "stageflow.schema"
_TRACKING = Field(
    default=None,
    validation_alias=AliasChoices("tracking_uri", "registry_url"),
    description="MLflow tracking/registry URI (default: the configured store)",
)


def _is_evaluation(value: Any) -> bool:
    return is_model(value) and value.get("kind") == "evaluation"


def _is_record(*kinds: str) -> Any:
    def accept(value: Any) -> bool:
        return isinstance(value, dict) and value.get("kind") in kinds

    return accept


# -- model_selection --------------------------------------------------------------------


class SelectionParams(BaseModel):
    model_config = _STRICT

    metric: str | None = Field(
        default=None,
        description=(
            "rank by this metric (default: the evaluations' primary one; for trained "
            "models cv_mean, else the test score)"
        ),
    )
    candidates: list[str] | None = Field(
        default=None,
        description="upstream tasks (or task runs such as evaluate[2]) to consider (default: all)",
    )


@register
class ModelSelection(MLOperator):
    """Pick the best of several upstream evaluations (or trained models) by a metric."""

    name = "model_selection"
    Params = SelectionParams
    example = """
        - id: select_best
          operator: model_selection
          upstream: [evaluate_rf, evaluate_gb]
          parameters: {metric: f1}
    """

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, SelectionParams)
        op = self.name
        entries = _flatten(inputs)
        evaluations = [e for e in entries if _is_evaluation(e[2])]
        what, key = "evaluations", "metrics"
        if not evaluations:
            evaluations = [e for e in entries if _is_trained(e[2])]
            what, key = "trained models", "training_metrics"
        if params.candidates is not None:
            wanted = set(params.candidates)
            missing = [
                c for c in params.candidates if not any(c in (u, t) for u, t, _ in evaluations)
            ]
            if missing:
                raise TaskFailed(f"{op}: candidates {', '.join(missing)} are not upstream {what}")
            evaluations = [e for e in evaluations if wanted & {e[0], e[1]}]
        if not evaluations:
            raise TaskFailed(
                f"{op}: no upstream model_evaluation output (nor model_training output); "
                "list the evaluation tasks under `upstream:`"
            )
        ranked_by = {t: v.get(key) or {} for _, t, v in evaluations}
        if params.metric is not None:
            metric = params.metric
        elif key == "metrics":
            metric = evaluations[0][2].get("primary_metric") or "accuracy"
        else:
            metric = _training_metric(evaluations, op)
        lacking = [t for t, m in ranked_by.items() if metric not in m]
        if lacking:
            have = ", ".join(ranked_by[evaluations[0][1]])
            raise TaskFailed(
                f"{op}: metric '{metric}' is missing from {', '.join(lacking)}; they have: {have}"
            )
        sign = 1.0 if metric in LOWER_IS_BETTER or metric == "cv_std" else -1.0
        ranked = sorted(evaluations, key=lambda e: sign * ranked_by[e[1]][metric])
        _, best_task, best = ranked[0]
        ranking = [_ranked(t, v, ranked_by[t][metric]) for _, t, v in ranked]
        record(
            ctx,
            metrics={f"best_{metric}": ranked_by[best_task][metric]},
            info={"selected": best_task, "ranking": ranking},
        )
        for place, item in enumerate(ranking, 1):
            chosen = ""
            if item.get("candidate"):
                values = item["candidate"].get("hyperparameters") or {}
                chosen = " [" + ", ".join(f"{k}={v!r}" for k, v in values.items()) + "]"
            print(
                f"{place}. {item['model']} ({item['task']}){chosen}: {metric}={item['value']:.4f}"
            )
        return {
            **best,
            "primary_metric": metric,
            "selection": {"metric": metric, "selected": best_task, "ranking": ranking},
        }


def _flatten(inputs: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """``(upstream, task run, value)`` for every input; a list counts as its elements."""
    out: list[tuple[str, str, Any]] = []
    for upstream, value in inputs.items():
        rounds = round_outputs(value)  # a repeated group: its last round's exit outputs
        if rounds is not None:
            k = value["iteration"]
            out.extend((upstream, f"{upstream}.{k}.{name}", v) for name, v in rounds.items())
            continue
        if not isinstance(value, list | tuple):
            out.append((upstream, upstream, value))
            continue
        for i, item in enumerate(value):
            own = item.get("task_id") if isinstance(item, dict) else None
            # A mapped task's element names its own run (evaluate[3]); with
            # min_success_ratio, failed elements are missing, so i may differ.
            run = own if isinstance(own, str) and own.startswith(f"{upstream}[") else None
            out.append((upstream, run or f"{upstream}[{i}]", item))
    return out


def _is_trained(value: Any) -> bool:
    return is_model(value) and value.get("kind") == "model"


def _training_metric(models: list[tuple[str, str, Any]], op: str) -> str:
    """The training metric to rank trained models by: cv_mean, else the test score."""
    kinds = {str(v.get("model_type") or "classification") for _, _, v in models}
    options = ["cv_mean", *(f"test_{default_metric(k)}" for k in sorted(kinds))]
    for name in options:
        if all(name in (v.get("training_metrics") or {}) for _, _, v in models):
            return name
    have = ", ".join(models[0][2].get("training_metrics") or {}) or "none"
    raise TaskFailed(
        f"{op}: the trained models have no held-out score to rank by ({' or '.join(options)}); "
        f"set `cross_validation:` on the training, evaluate them with model_evaluation, or "
        f"name one of their metrics with `metric:` (they have: {have})"
    )


def _ranked(task: str, value: Mapping[str, Any], score: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"task": task, "model": value.get("name"), "value": score}
    candidate = value.get("candidate")
    if candidate:
        item["candidate"] = candidate
    return item


# -- model_registration -------------------------------------------------------------------


class RegistrationParams(BaseModel):
    model_config = _STRICT

    model_name: str = Field(
        validation_alias=AliasChoices("model_name", "name"),
        min_length=1,
        description="registered model name",
    )
    alias: str | None = Field(default=None, description="alias for the new version (e.g. staging)")
    description: str | None = Field(default=None, description="the version's description")
    tags: dict[str, Any] | list[str] | None = Field(
        default=None, description="version tags (a mapping, or seed 001's list of words)"
    )
    model_version: str | None = Field(
        default=None, description="seed 001's version label, kept as the tag version_label"
    )
    only_if_better_than: str | None = Field(
        default=None, description="register only if better than the version under this alias"
    )
    allow_schema_change: bool = Field(
        default=False,
        description="let the gate pass a model whose columns differ from the champion's",
    )
    metric: str | None = Field(default=None, description="the gate's metric")
    experiment: str | None = Field(default=None, description="MLflow experiment for the run")
    tracking_uri: str | None = _TRACKING
    input: str | None = Field(default=None, description="the upstream task with the model")


@register
class ModelRegistration(MLOperator):
    """Register the upstream model as a new version in the MLflow model registry."""

    name = "model_registration"
    Params = RegistrationParams
    example = """
        - id: register
          operator: model_registration
          upstream: [select_best]
          parameters:
            model_name: fraud-detector
            alias: staging
            description: best of two by f1
            tags: {team: risk}
            only_if_better_than: production
    """

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, RegistrationParams)
        op = self.name
        _, model = pick(inputs, params.input, is_model, "a trained model", op)
        uri = _mlflow.tracking_uri(params.tracking_uri, ctx.home)
        c = _mlflow.client(uri)
        name = params.model_name
        metric = (
            params.metric
            or model.get("primary_metric")
            or default_metric(model.get("model_type") or "classification")
        )
        metrics = dict(model.get("metrics") or model.get("training_metrics") or {})
        base = {
            "kind": "registered_model",
            "model_name": name,
            "primary_metric": metric,
            "metrics": metrics,
            "champion": model.get("champion"),
            "tracking_uri": _mlflow.mask_uri(uri),
        }
        schema = schema_of(model)
        if schema is not None:
            base["schema"] = schema
        if params.only_if_better_than:
            ok, reason = gate(
                c,
                name,
                params.only_if_better_than,
                metric,
                metrics,
                model,
                allow_schema_change=params.allow_schema_change,
            )
            print(f"gate: {reason}")
            if not ok:
                record(ctx, metrics={"registered": 0}, info={"reason": reason})
                return {**base, "registered": False, "version": None, "reason": reason}
        exp = _mlflow.experiment_id(c, _mlflow.experiment_name(params.experiment), uri)
        tags = {
            "stageflow.run_id": ctx.run_id,
            "stageflow.task_id": ctx.task_id,
            "stageflow.kind": "task",
            "mlflow.runName": f"{ctx.task_id} ({ctx.run_id})",
        }
        run = c.create_run(exp, tags=tags)
        run_id = run.info.run_id
        try:
            _log_run(c, run_id, model, metrics)
            source = _mlflow.log_model(c, run_id, model["estimator"], model.get("input_example"))
        except Exception:
            c.set_terminated(run_id, status="FAILED")
            raise
        c.set_terminated(run_id)
        with _quiet_exists():
            c.create_registered_model(name)
        version_tags = {
            **_mlflow.tags_of(params.tags),
            **{f"metric.{k}": repr(float(v)) for k, v in metrics.items()},
            "stageflow.run_id": ctx.run_id,
            "stageflow.task_id": ctx.task_id,
            "algorithm": str(model.get("algorithm")),
        }
        if params.model_version:
            version_tags["version_label"] = params.model_version
        if schema is not None:
            version_tags[SCHEMA_TAG] = schema
        mv = c.create_model_version(
            name, source, run_id=run_id, tags=version_tags, description=params.description
        )
        if params.alias:
            c.set_registered_model_alias(name, params.alias, mv.version)
        model_ref = f"models:/{name}/{mv.version}"
        digest = hashlib.sha256(f"{model_ref}|{run_id}".encode()).hexdigest()
        record(
            ctx,
            metrics={"registered": 1, "version": float(mv.version)},
            writes=[{"uri": model_ref, "sha256": digest, "kind": "registered_model"}],
            info={"mlflow_run_id": run_id, "model_uri": model_ref},
        )
        where = f" as {name}@{params.alias}" if params.alias else ""
        print(f"registered {name} version {mv.version}{where} (MLflow run {run_id})")
        return {
            **base,
            "registered": True,
            "version": str(mv.version),
            "alias": params.alias,
            "model_uri": model_ref,
            "mlflow_run_id": run_id,
            "reason": "registered",
        }


def gate(
    c: Any,
    name: str,
    alias: str,
    metric: str,
    metrics: Mapping[str, float],
    evaluated: Mapping[str, Any] | None,
    *,
    allow_schema_change: bool = False,
) -> tuple[bool, str]:
    """Whether a candidate with ``metrics`` beats ``name@alias`` on ``metric``, and why.

    A champion that cannot be compared with the candidate (it cannot score the
    candidate's rows, or its recorded schema differs) keeps its place unless
    ``allow_schema_change``.
    """
    if metric not in metrics:
        raise TaskFailed(
            f"the gate needs the candidate's '{metric}', which it lacks; "
            f"it has: {', '.join(metrics) or 'no metrics'}"
        )
    mine = float(metrics[metric])
    mv = _mlflow.champion(c, name, alias)
    if mv is None:
        return True, f"no {name}@{alias} yet: the candidate ({metric} {mine:.4f}) goes ahead"
    comparison = (evaluated or {}).get("champion") or {}
    about_champion = (
        comparison.get("model_name") == name
        and comparison.get("alias") == alias
        and str(comparison.get("version")) == str(mv.version)
    )
    theirs_schema = (getattr(mv, "tags", None) or {}).get(SCHEMA_TAG)
    mine_schema = schema_of(evaluated or {})
    why = None
    if about_champion and comparison.get("incomparable"):
        why = "cannot score the candidate's rows (it was trained on other columns)"
    elif theirs_schema and mine_schema and theirs_schema != mine_schema:
        why = "was trained on other columns (or another target) than the candidate"
    if why is not None:
        if allow_schema_change:
            return True, (
                f"{name}@{alias} v{mv.version} {why}; allow_schema_change is set: "
                f"the candidate ({metric} {mine:.4f}) goes ahead"
            )
        return False, (
            f"{name}@{alias} v{mv.version} {why}, so the two cannot be compared: the champion "
            "keeps its place; to replace it with a model of another schema, set "
            "`allow_schema_change: true` on this task (or use another model_name)"
        )
    same = about_champion and (
        comparison.get("metric") == metric and comparison.get("champion_value") is not None
    )
    if same:
        theirs, how = float(comparison["champion_value"]), "on the same rows"
    else:
        recorded = _mlflow.version_metrics(mv).get(metric)
        if recorded is None:
            return True, (
                f"{name}@{alias} (v{mv.version}) has no recorded {metric}: the candidate goes ahead"
            )
        theirs, how = recorded, "as registered"
    if better(metric, mine, theirs):
        return True, (
            f"candidate {metric} {mine:.4f} beats {name}@{alias} v{mv.version} ({theirs:.4f} {how})"
        )
    return False, (
        f"candidate {metric} {mine:.4f} does not beat {name}@{alias} v{mv.version} "
        f"({theirs:.4f} {how}); the champion keeps its place"
    )


def schema_of(model: Mapping[str, Any]) -> str | None:
    """A short hash of what a model takes and predicts (its input columns, target and
    task type), or ``None`` when the record does not say; registered as the
    version tag ``stageflow.schema``."""
    if isinstance(model.get("schema"), str):
        return str(model["schema"])
    columns = model.get("feature_names_in")
    if not columns:
        return None
    what = {
        "columns": list(columns),
        "target": model.get("target"),
        "type": model.get("model_type"),
    }
    return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:16]


# -- model_deployment ------------------------------------------------------------------------


class DeploymentParams(BaseModel):
    model_config = _STRICT

    model_name: str | None = Field(default=None, description="default: the upstream's model")
    version: str | None = Field(default=None, description="default: the upstream's new version")
    alias: str = Field(default="production", description="the alias to point at the version")
    previous_alias: str | None = Field(
        default=None, description="where the replaced version goes (default: ALIAS-previous)"
    )
    only_if_better_than: str | None = Field(
        default=None, description="promote only if better than the version under this alias"
    )
    allow_schema_change: bool = Field(
        default=False,
        description="let the gate pass a model whose columns differ from the champion's",
    )
    metric: str | None = Field(default=None, description="the gate's metric")
    rollback: bool = Field(default=False, description="swap ALIAS and the previous alias back")
    tracking_uri: str | None = _TRACKING
    input: str | None = Field(default=None, description="the upstream registration task")


@register
class ModelDeployment(MLOperator):
    """Promote a registered version to an alias, keeping the previous one for rollback."""

    name = "model_deployment"
    Params = DeploymentParams
    example = """
        - id: promote
          operator: model_deployment
          upstream: [register]
          parameters: {alias: production, only_if_better_than: production}
    """

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, DeploymentParams)
        op = self.name
        uri = _mlflow.tracking_uri(params.tracking_uri, ctx.home)
        upstream: dict[str, Any] = {}
        if params.model_name is None or (params.version is None and not params.rollback):
            _, upstream = pick(
                inputs, params.input, _is_record("registered_model"), "a registered model", op
            )
        name = params.model_name or upstream["model_name"]
        previous_alias = params.previous_alias or f"{params.alias}-previous"
        base = {
            "kind": "deployment",
            "model_name": name,
            "alias": params.alias,
            "previous_alias": previous_alias,
        }
        c = _mlflow.client(uri)
        if params.rollback:
            return _rollback(c, name, params.alias, previous_alias, base, ctx)
        if upstream and not upstream.get("registered", True):
            reason = f"nothing to promote: {upstream.get('reason')}"
            print(reason)
            record(ctx, metrics={"promoted": 0}, info={"reason": reason})
            return {**base, "promoted": False, "version": None, "reason": reason}
        version = str(params.version or upstream["version"])
        if params.only_if_better_than:
            metric = params.metric or upstream.get("primary_metric") or "accuracy"
            candidate = upstream
            if not upstream.get("metrics") or schema_of(upstream) is None:
                mv = c.get_model_version(name, version)
                tags = getattr(mv, "tags", None) or {}
                candidate = {
                    **upstream,
                    "metrics": upstream.get("metrics") or _mlflow.version_metrics(mv),
                    "schema": schema_of(upstream) or tags.get(SCHEMA_TAG),
                }
            ok, reason = gate(
                c,
                name,
                params.only_if_better_than,
                metric,
                candidate["metrics"],
                candidate,
                allow_schema_change=params.allow_schema_change,
            )
            print(f"gate: {reason}")
            if not ok:
                record(ctx, metrics={"promoted": 0}, info={"reason": reason})
                return {**base, "promoted": False, "version": version, "reason": reason}
        current = _mlflow.champion(c, name, params.alias)
        if current is not None and str(current.version) == version:
            reason = f"{name}@{params.alias} is already version {version}"
            record(ctx, metrics={"promoted": 0}, info={"reason": reason})
            return {**base, "promoted": False, "version": version, "reason": reason}
        try:
            c.get_model_version(name, version)
        except Exception:  # MlflowException: unknown model or version
            raise TaskFailed(f"{op}: no registered model {name} version {version}") from None
        if current is not None:
            c.set_registered_model_alias(name, previous_alias, current.version)
        c.set_registered_model_alias(name, params.alias, version)
        previous = None if current is None else str(current.version)
        reason = f"{name}@{params.alias} -> version {version}" + (
            f" (was {previous}, kept as {name}@{previous_alias})" if previous else ""
        )
        print(f"promoted: {reason}")
        record(ctx, metrics={"promoted": 1}, info={"reason": reason})
        return {
            **base,
            "promoted": True,
            "version": version,
            "previous_version": previous,
            "model_uri": f"models:/{name}@{params.alias}",
            "reason": reason,
        }


def _rollback(
    c: Any, name: str, alias: str, previous_alias: str, base: dict[str, Any], ctx: TaskContext
) -> dict[str, Any]:
    before = _mlflow.champion(c, name, previous_alias)
    if before is None:
        raise TaskFailed(f"model_deployment: nothing to roll back to: no {name}@{previous_alias}")
    current = _mlflow.champion(c, name, alias)
    c.set_registered_model_alias(name, alias, before.version)
    if current is not None:
        c.set_registered_model_alias(name, previous_alias, current.version)
    reason = f"rolled back {name}@{alias} to version {before.version}"
    print(reason)
    record(ctx, metrics={"promoted": 1}, info={"reason": reason})
    return {
        **base,
        "promoted": True,
        "version": str(before.version),
        "previous_version": None if current is None else str(current.version),
        "model_uri": f"models:/{name}@{alias}",
        "reason": reason,
    }


# -- batch_inference ---------------------------------------------------------------------------


class BatchParams(BaseModel):
    model_config = _STRICT

    model: str | None = Field(
        default=None,
        description="NAME@ALIAS or NAME/VERSION in the registry (default: the upstream model)",
    )
    source: str | None = Field(
        default=None, description="data to score: a path or URL (s3://...) (default: upstream data)"
    )
    format: Literal["csv", "json", "jsonl", "parquet"] | None = Field(
        default=None, description="format of `source`"
    )
    split: Literal["holdout", "test", "train"] = Field(
        default="holdout", description="rows to score when the data is an upstream features record"
    )
    prediction_column: str = Field(default="prediction", description="name of the output column")
    probabilities: bool = Field(default=True, description="add proba_<class> columns")
    keep_columns: list[str] | None = Field(
        default=None, description="input columns to keep in the output (default: all)"
    )
    to: str | None = Field(
        default=None,
        description="also write the predictions here: a path (relative: from the pipeline's "
        "folder) or a URL (s3://bucket/scores.parquet); format from the suffix",
    )
    tracking_uri: str | None = _TRACKING
    input: str | None = Field(default=None, description="the upstream task with the data")


@register
class BatchInference(MLOperator):
    """Score a dataset with a model; output the rows with their predictions."""

    name = "batch_inference"
    Params = BatchParams
    example = """
        - id: score
          operator: batch_inference
          upstream: [features, promote]
          parameters: {model: fraud-detector@production, split: holdout, to: scores.parquet}
    """

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, BatchParams)
        op = self.name
        need("pandas", op)
        data, read = _data(params, inputs, ctx, op)
        estimator, model_read, label = _model(params, inputs, ctx, op)
        columns = getattr(estimator, "feature_names_in_", None)
        x = data
        if columns is not None:
            _require_features(data, [str(c) for c in columns], label, op)
            x = data[list(columns)]
        try:
            predicted = estimator.predict(x)
        except Exception as exc:  # scikit-learn raises ValueError/TypeError with good text
            raise TaskFailed(f"{op}: {label} could not score the data: {exc}") from None
        out = data[params.keep_columns].copy() if params.keep_columns else data.copy()
        out[params.prediction_column] = predicted
        if params.probabilities and hasattr(estimator, "predict_proba"):
            proba = estimator.predict_proba(x)
            for k, cls in enumerate(getattr(estimator, "classes_", range(proba.shape[1]))):
                out[f"proba_{cls}"] = proba[:, k]
        import io

        buf = io.BytesIO()
        out.to_parquet(buf, index=False)
        uri = put_file(ctx, "predictions.parquet", buf.getvalue(), "predictions")
        writes = []
        if params.to:
            to = ctx.resolve_path(params.to)  # relative: the pipeline's folder
            writes.append(write_table(out, to, table=None, if_exists="replace", op=op))
        record(
            ctx,
            metrics={"rows_scored": len(out)},
            reads=[read, model_read],
            writes=writes,
            info={"predictions": uri, "model": label},
        )
        print(f"scored {len(out)} rows with {label}; predictions: {uri}")
        return out


def _data(
    params: BatchParams, inputs: Mapping[str, Any], ctx: TaskContext, op: str
) -> tuple[Any, dict[str, Any]]:
    if params.source is not None:  # a relative path starts at the pipeline's folder
        return read_table(ctx.resolve_path(params.source), fmt=params.format, op=op)

    def usable(value: Any) -> bool:
        return is_frame(value) or is_features(value)

    origin, value = pick(inputs, params.input, usable, "data (a DataFrame or features)", op)
    if is_features(value):
        frame = value[params.split]
        if len(frame) == 0:
            raise TaskFailed(f"{op}: the features from '{origin}' have no {params.split} rows")
        where = f"task:{origin}#{params.split}"
    else:
        frame, where = value, f"task:{origin}"
    return frame, {"uri": where, "sha256": frame_hash(frame), "kind": "upstream"}


def _require_features(data: Any, columns: list[str], label: str, op: str) -> None:
    """Raise a ``TaskFailed`` that is not retried (the data will not change) when
    ``data`` lacks feature columns the model was trained on: how many, the first
    five, and the fix."""
    missing = [c for c in columns if c not in data.columns]
    if not missing:
        return
    shown = ", ".join(repr(c) for c in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise TaskFailed(
        f"{op}: {label} expects another schema: the data lacks {len(missing)} of its "
        f"{len(columns)} feature columns ({shown}{more}), so the model was trained on "
        "other data; score with the model trained on these columns (`model: NAME@ALIAS`; "
        "register each dataset's model under a name of its own)",
        retryable=False,
    )


def _model(
    params: BatchParams, inputs: Mapping[str, Any], ctx: TaskContext, op: str
) -> tuple[Any, dict[str, Any], str]:
    ref = params.model
    if ref is None:
        models = [v for v in inputs.values() if is_model(v)]
        if len(models) == 1:
            model = models[0]
            label = str(model.get("name") or "the upstream model")
            return (
                model["estimator"],
                {"uri": f"task:{model.get('task_id')}", "kind": "model"},
                label,
            )
        records = [v for v in inputs.values() if _is_record("deployment", "registered_model")(v)]
        if len(records) == 1 and records[0].get("model_name"):
            rec = records[0]
            alias = rec.get("alias")
            ref = (
                f"{rec['model_name']}@{alias}"
                if rec["kind"] == "deployment" and alias
                else (f"{rec['model_name']}/{rec.get('version')}" if rec.get("version") else None)
            )
        if ref is None:
            raise TaskFailed(
                f"{op}: no model: set `model: NAME@ALIAS`, or give exactly one upstream "
                "model, evaluation, registration or deployment"
            )
    name, alias, version = _mlflow.model_uri(ref)
    uri = _mlflow.tracking_uri(params.tracking_uri, ctx.home)
    c = _mlflow.client(uri)
    if alias is not None:
        mv = _mlflow.champion(c, name, alias)
        if mv is None:
            raise TaskFailed(f"{op}: no registered model {name}@{alias}")
        version = str(mv.version)
    elif version is None:
        raise TaskFailed(f"{op}: say which version of {name}: {name}@ALIAS or {name}/VERSION")
    try:
        estimator = _mlflow.load_version(c, name, version)
    except Exception as exc:  # MlflowException and loader errors
        raise TaskFailed(f"{op}: cannot load {name} version {version}: {exc}") from None
    label = f"{name} v{version}" + (f" ({name}@{alias})" if alias else "")
    return estimator, {"uri": f"models:/{name}/{version}", "kind": "model"}, label


def _log_run(c: Any, run_id: str, model: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    from mlflow.entities import Metric, Param

    params = [Param("algorithm", str(model.get("algorithm")))]
    for key, value in (model.get("hyperparameters") or {}).items():
        params.append(Param(str(key)[:250], str(value)[:6000]))
    import time

    now = int(time.time() * 1000)
    values = [Metric(str(k), float(v), now, 0) for k, v in metrics.items()]
    c.log_batch(run_id, metrics=values, params=params)


class _quiet_exists:
    """Ignore "already exists" from the registry (a parallel task may create it first)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        code = getattr(exc, "error_code", "")
        return code == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(exc).lower()
