"""Task metadata: what an attempt measured, read and wrote, beside its output.

An operator (or a ``python`` step that takes ``context``) calls ``record`` to
note metrics, the data it read and the files it wrote, and free-form facts
(row counts, schemas). They go to a small JSON file next to the attempt's log,
``<home>/logs/<run_id>/<task_id>/metadata-<attempt>.json``, merged across calls,
so the same code works in a thread, a worker process or a cluster worker with
the logs folder mounted. The runtime reads the successful attempt's file when
the run ends (``runtime.lineage``): metrics feed ``runs diff`` and experiment
tracking, reads and writes feed lineage. A cache hit has no code of its own to
call ``record``: the run copies the metrics its producing attempt recorded into
the hit's file (``record_metrics``, ``runtime.cache``).

Entries of ``reads``/``writes``: ``{"uri": ..., "sha256": ... | None, "kind": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stageflow.operators.base import TaskContext

__all__ = [
    "metadata_file",
    "metadata_path",
    "read_metadata",
    "record",
    "record_metrics",
    "sha256_bytes",
    "sha256_file",
]

_lock = threading.Lock()


def metadata_path(ctx: TaskContext) -> Path:
    """The metadata file of this attempt."""
    return ctx.log_path.with_name(f"metadata-{ctx.attempt}.json")


def record(
    ctx: TaskContext,
    *,
    metrics: Mapping[str, float] | None = None,
    reads: Iterable[Mapping[str, Any]] = (),
    writes: Iterable[Mapping[str, Any]] = (),
    info: Mapping[str, Any] | None = None,
) -> None:
    """Merge metrics, reads, writes and info into this attempt's metadata file.

    Metrics that are not finite numbers are dropped (MLflow and JSON refuse them).
    """
    _merge(metadata_path(ctx), metrics, reads, writes, info)


def record_metrics(
    logs_dir: Path, run_id: str, task_id: str, attempt: int, metrics: Mapping[str, float]
) -> None:
    """``record`` metrics for an attempt that runs no code (a cache hit): merged into
    ``metadata_file(...)`` as ``record`` would."""
    _merge(metadata_file(logs_dir, run_id, task_id, attempt), metrics, (), (), None)


def metadata_file(logs_dir: Path, run_id: str, task_id: str, attempt: int) -> Path:
    """Where an attempt's metadata lives (``metadata_path`` without a context)."""
    return logs_dir / run_id / task_id / f"metadata-{attempt}.json"


def read_metadata(logs_dir: Path, run_id: str, task_id: str, attempt: int) -> dict[str, Any]:
    """The metadata an attempt recorded (empty sections when it recorded none)."""
    return _load(metadata_file(logs_dir, run_id, task_id, attempt))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _merge(
    path: Path,
    metrics: Mapping[str, float] | None,
    reads: Iterable[Mapping[str, Any]],
    writes: Iterable[Mapping[str, Any]],
    info: Mapping[str, Any] | None,
) -> None:
    with _lock:
        data = _load(path)
        for name, value in (metrics or {}).items():
            number = _finite(value)
            if number is not None:
                data["metrics"][str(name)] = number
        data["reads"].extend(dict(r) for r in reads)
        data["writes"].extend(dict(w) for w in writes)
        data["info"].update(info or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, default=str, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = {"metrics": {}, "reads": [], "writes": [], "info": {}}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return data
    if isinstance(loaded, dict):
        for key, empty in data.items():
            value = loaded.get(key)
            if isinstance(value, type(empty)):
                data[key] = value
    return data


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
