"""The artifact store and output serialization.

Outputs are serialized by the first matching ``Serializer``: ``none``
(``None``), ``json`` (plain JSON data that round-trips exactly), ``parquet``
(pandas DataFrames), ``joblib`` (scikit-learn estimators), ``pickle`` (the rest).
Small results (``inline_limit`` bytes) live inline in the store; larger ones
are files written atomically (temp + rename locally; fsspec's whole-object put
elsewhere) before the task's success is committed (DESIGN.md, durability rule).
The root is ``STAGEFLOW_ARTIFACTS_URL`` (``Settings.artifacts_root``): a folder,
or a URL such as ``s3://bucket/prefix`` (endpoint and credentials:
``operators/object_storage.py``). A write that fails there (no bucket, refused
credentials) fails the task writing with one line saying which and how to fix it.
``register_serializer`` adds one in front of the built-ins.

Every output file has a path of its own, so no writer can replace bytes that
another one's success committed: ``<root>/outputs/<run_id>/<task_id>/attempt-N``
for attempt N (a mapped task's list of its children's outputs: under the
mapped task's own attempt number) and ``.../fallback-N`` for a fallback used
after attempt N (that attempt may still run: a thread cannot be stopped). The
committed ``OutputRef`` holds the URI and the sha256 of exactly the bytes
written there; readers go by that URI, so outputs stored at
``outputs/<run_id>/<task_id>`` (the layout before a task had a folder of its
own) still load; a new output of such a task goes beside that file
(``<task_id>@attempt-N``). ``ArtifactStore.put`` is the one place that writes
files: outputs here, and the files operators make through
``TaskContext.write_file``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stageflow.errors import MissingExtra, ObjectStorageError
from stageflow.operators import object_storage
from stageflow.operators.base import TaskFailed
from stageflow.runtime.store.base import OutputRef

__all__ = [
    "ArtifactStore",
    "Serializer",
    "artifact_store",
    "deserialize",
    "load_output",
    "output_path",
    "register_serializer",
    "serialize",
    "store_output",
]


#: How messages about the store's files start (the setting that chose its root).
_WHAT = "the artifact store (STAGEFLOW_ARTIFACTS_URL)"


@dataclass(frozen=True, slots=True)
class Serializer:
    name: str
    matches: Callable[[Any], bool]
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _is_json(obj: Any) -> bool:
    return isinstance(obj, dict | list | str | int | float | bool) and _json_exact(obj)


def _json_exact(obj: Any) -> bool:
    try:
        return bool(json.loads(json.dumps(obj, allow_nan=False)) == obj)
    except (TypeError, ValueError, RecursionError):
        return False


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def _parquet_dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    obj.to_parquet(buf)
    return buf.getvalue()


def _parquet_loads(data: bytes) -> Any:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


def _is_estimator(obj: Any) -> bool:
    return type(obj).__module__.startswith("sklearn")


def _joblib_dumps(obj: Any) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def _joblib_loads(data: bytes) -> Any:
    import joblib

    return joblib.load(io.BytesIO(data))


def _pickle_dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        import cloudpickle  # lambdas and closures

        return bytes(cloudpickle.dumps(obj))


_SERIALIZERS: list[Serializer] = [
    Serializer("none", lambda o: o is None, lambda o: b"", lambda b: None),
    Serializer("json", _is_json, lambda o: json.dumps(o).encode(), json.loads),
    Serializer("parquet", _is_dataframe, _parquet_dumps, _parquet_loads),
    Serializer("joblib", _is_estimator, _joblib_dumps, _joblib_loads),
    Serializer("pickle", lambda o: True, _pickle_dumps, pickle.loads),
]


def register_serializer(serializer: Serializer) -> None:
    """Try ``serializer`` before the built-ins (except ``none``)."""
    _SERIALIZERS.insert(1, serializer)


def serialize(obj: Any) -> tuple[str, bytes]:
    for s in _SERIALIZERS:
        if s.matches(obj):
            try:
                return s.name, s.dumps(obj)
            except Exception:  # e.g. a DataFrame parquet cannot hold: fall through
                if s.name == "pickle":
                    raise
    raise AssertionError("the pickle serializer matches everything")


def deserialize(name: str, data: bytes) -> Any:
    for s in _SERIALIZERS:
        if s.name == name:
            return s.loads(data)
    raise ValueError(f"unknown serializer '{name}'")


class ArtifactStore:
    """Files under a root: a local folder (default) or any fsspec URL.

    It is the ``operators.base.FileStore`` that a ``TaskContext`` writes through.
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self._local = "://" not in root or root.startswith("file://")
        if self._local:
            self._path = Path(root.removeprefix("file://"))

    def local_path(self, relpath: str) -> Path | None:
        """Where ``relpath`` is on this machine's disk; ``None`` for a remote store."""
        return self._path / relpath if self._local else None

    def put(self, relpath: str, data: bytes) -> str:
        """Write ``data`` atomically at ``relpath``; return its URI."""
        if self._local:
            target = self._path / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return str(target.resolve())
        uri = f"{self.root}/{relpath}"
        try:  # whole-object put: visible all at once or not at all
            object_storage.write_bytes(uri, data, _WHAT)
        except (ObjectStorageError, MissingExtra) as exc:
            # Only tasks write here (their outputs and files): their attempt fails
            # with this one line, not retried for a missing bucket or package or
            # refused credentials (another attempt would meet the same).
            raise TaskFailed(str(exc), retryable=getattr(exc, "retryable", False)) from None
        return uri

    def get(self, uri: str) -> bytes:
        """The bytes at ``uri`` (a file this store or another one wrote), as they are
        now; ``ObjectStorageError`` or ``MissingExtra`` when a remote one cannot be read."""
        if "://" not in uri or uri.startswith("file://"):
            return Path(uri.removeprefix("file://")).read_bytes()
        return object_storage.read_bytes(uri, _WHAT)


@functools.lru_cache(maxsize=64)
def artifact_store(root: str) -> ArtifactStore:
    """The ``ArtifactStore`` of ``root``, shared (it holds no state of its own)."""
    return ArtifactStore(root)


def output_path(run_id: str, task_id: str, attempt: int, *, fallback: bool = False) -> str:
    """Where the output of ``task_id``'s attempt ``attempt`` (or of the fallback used
    after it) is written, relative to the artifact store's root."""
    return f"outputs/{run_id}/{task_id}/{_file_name(attempt, fallback)}"


def store_output(
    obj: Any,
    *,
    run_id: str,
    task_id: str,
    attempt: int,
    artifacts: ArtifactStore,
    inline_limit: int,
    fallback: bool = False,
) -> OutputRef:
    """Serialize and store ``obj`` durably at ``output_path``; return the reference
    to commit (naming the file written and the sha256 of its bytes)."""
    name, data = serialize(obj)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= inline_limit:
        return OutputRef(run_id, task_id, "inline", name, len(data), digest, data=data)
    relpath = output_path(run_id, task_id, attempt, fallback=fallback)
    try:
        uri = artifacts.put(relpath, data)
    except (FileExistsError, NotADirectoryError):
        # A run begun before tasks had a folder of their own (``retry --from``,
        # ``resume``) may hold the task's output file where the folder goes, and a
        # committed success may name it: keep it and write beside it ('@' is never
        # part of an id, so this name is nobody else's).
        uri = artifacts.put(f"outputs/{run_id}/{task_id}@{_file_name(attempt, fallback)}", data)
    return OutputRef(run_id, task_id, "file", name, len(data), digest, uri=uri)


def load_output(ref: OutputRef, artifacts: ArtifactStore) -> Any:
    """The object an ``OutputRef`` points at."""
    if ref.kind == "inline":
        return deserialize(ref.serializer, ref.data or b"")
    return deserialize(ref.serializer, artifacts.get(ref.uri or ""))


def _file_name(attempt: int, fallback: bool) -> str:
    return f"{'fallback' if fallback else 'attempt'}-{attempt}"
