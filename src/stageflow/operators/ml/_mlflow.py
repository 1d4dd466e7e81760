"""MLflow access shared by the registry operators, tracking and ``models serve``.

The tracking URI is, first found: the operator's ``tracking_uri`` parameter,
``STAGEFLOW_MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_URI``, else a SQLite
store in the state folder (``sqlite:///<home>/mlflow.db``), so registering a
model works with no server. For a SQLite store, experiments keep their
artifacts in ``mlflow-artifacts/`` beside the database file (never in the
working directory). Creating the SQLite schema is serialised across threads
and processes with a lock file, as several tasks may open a fresh store at once.

Everything goes through an explicit ``MlflowClient`` (never MLflow's
process-global "active run"), so tasks in parallel threads do not mix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stageflow.operators.base import TaskFailed
from stageflow.operators.ml._common import need

__all__ = [
    "DEFAULT_EXPERIMENT",
    "champion",
    "client",
    "experiment_id",
    "log_model",
    "mask_uri",
    "model_uri",
    "tracking_uri",
]

DEFAULT_EXPERIMENT = "stageflow"
_clients: dict[str, Any] = {}
_lock = threading.Lock()
_MODEL_REF = re.compile(r"^(?P<name>[^@/]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))?$")


def tracking_uri(explicit: str | None = None, home: Path | None = None) -> str:
    """The MLflow tracking URI to use (see the module docstring)."""
    for value in (
        explicit,
        os.environ.get("STAGEFLOW_MLFLOW_TRACKING_URI"),
        os.environ.get("MLFLOW_TRACKING_URI"),
    ):
        if value:
            return value
    base = (home or Path(os.environ.get("STAGEFLOW_HOME") or ".stageflow")).absolute()
    return f"sqlite:///{base / 'mlflow.db'}"


def experiment_name(explicit: str | None = None) -> str:
    return explicit or os.environ.get("STAGEFLOW_MLFLOW_EXPERIMENT") or DEFAULT_EXPERIMENT


def client(uri: str) -> Any:
    """The process's ``MlflowClient`` on ``uri`` (tracking and registry).

    The first one per URI is made under a thread lock and a lock file: making it
    creates or upgrades the store's schema, which must not run twice at once.
    Raises ``MissingExtra`` without mlflow, ``TaskFailed`` when the store cannot be used.
    """
    found = _clients.get(uri)
    if found is not None:
        return found
    need("mlflow", "MLflow tracking and the model registry")
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with _lock, _file_lock(uri):
        if uri not in _clients:
            try:
                made = MlflowClient(tracking_uri=uri, registry_uri=uri)
                # The registry store is a second object over the same database.
                made.search_registered_models(max_results=1)
            except Exception as exc:  # MLflow raises many types for a bad store
                raise TaskFailed(
                    f"cannot open the MLflow store at {mask_uri(uri)}: {exc}"
                ) from None
            _clients[uri] = made
    return _clients[uri]


def experiment_id(c: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with a local artifact root) if absent."""
    found = c.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        location = (db.parent / "mlflow-artifacts").absolute().as_uri()
    try:
        return str(c.create_experiment(name, artifact_location=location))
    except Exception:  # created by a parallel task meanwhile
        again = c.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def log_model(c: Any, run_id: str, estimator: Any, example: Any) -> str:
    """Save a scikit-learn model as an MLflow model into run ``run_id``; return its source URI."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = None
    if example is not None and len(example):
        with contextlib.suppress(Exception):  # a signature is a nicety, not a requirement
            signature = infer_signature(example, estimator.predict(example))
    requirements = [f"scikit-learn=={_version('scikit-learn')}", "pandas", "numpy"]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model")
        try:
            # skops (MLflow's safe default) refuses types it was not told to trust;
            # we made this model, so trust exactly the types it holds.
            import skops.io  # type: ignore[import-untyped]  # no stubs; comes with mlflow

            trusted = skops.io.get_untrusted_types(data=skops.io.dumps(estimator))
            mlflow.sklearn.save_model(
                estimator,
                path,
                signature=signature,
                pip_requirements=requirements,
                serialization_format="skops",
                skops_trusted_types=trusted,
            )
        except Exception:  # e.g. a user function skops cannot hold: fall back to cloudpickle
            shutil.rmtree(path, ignore_errors=True)
            mlflow.sklearn.save_model(
                estimator,
                path,
                signature=signature,
                pip_requirements=requirements,
                serialization_format="cloudpickle",
            )
        c.log_artifacts(run_id, path, "model")
    return f"{c.get_run(run_id).info.artifact_uri}/model"


def model_uri(ref: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``NAME``, ``NAME@ALIAS``, ``NAME/VERSION`` or ``models:/...``.

    Raises ``TaskFailed`` for anything else.
    """
    text = ref.removeprefix("models:/")
    match = _MODEL_REF.match(text)
    if match is None:
        raise TaskFailed(f"'{ref}' is not a model reference; use NAME@ALIAS or NAME/VERSION")
    return match.group("name"), match.group("alias"), match.group("version")


def champion(c: Any, name: str, alias: str) -> Any | None:
    """The model version under ``name@alias``, or ``None`` when there is none."""
    try:
        return c.get_model_version_by_alias(name, alias)
    except Exception as exc:  # MlflowException: no such model or alias
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or (
            "not found" in str(exc).lower()
        ):
            return None
        raise


def load_version(c: Any, name: str, version: str) -> Any:
    """The scikit-learn model of ``name`` version ``version``."""
    import mlflow.sklearn

    return mlflow.sklearn.load_model(c.get_model_version_download_uri(name, version))


def version_metrics(mv: Any) -> dict[str, float]:
    """The metrics stageflow stored as tags on a model version (``metric.NAME``)."""
    out: dict[str, float] = {}
    for key, value in (getattr(mv, "tags", None) or {}).items():
        if key.startswith("metric."):
            with contextlib.suppress(ValueError):
                out[key.removeprefix("metric.")] = float(value)
    return out


def mask_uri(uri: str) -> str:
    """``uri`` without a password (safe to print)."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", uri)


def tags_of(values: Mapping[str, Any] | list[str] | None) -> dict[str, str]:
    """Seed 001 gives tags as a list of words; MLflow wants key -> value."""
    if values is None:
        return {}
    if isinstance(values, list):
        return {str(v): "true" for v in values}
    return {str(k): str(v) for k, v in values.items()}


@contextlib.contextmanager
def _file_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
