"""Load a pipeline from what a user names: a YAML/JSON file or ``module:attribute``.

``path/to/pipeline.yaml|.yml|.json`` is read and validated: only a regular file
(after symlinks: not a FIFO, which would block, nor a device such as
``/dev/zero``, which never ends), and never more than the size limit, whatever
size the file reports; its folder goes on ``sys.path`` so its ``call:`` targets can live
beside it. ``package.module:name`` or ``path/to/file.py:name`` imports the
module and takes ``name``, which must be a ``Pipeline`` (or a function with
no arguments returning one).

``pipeline_of_run`` is the one way to get back the pipeline a recorded run used
(the version saved in the store when the run was created). Its error policy is
the same for every caller: it returns the pipeline or raises a ``StageflowError``
(``StoreError`` when that version is not in the store, ``InvalidSpec`` when the
saved spec no longer builds); a caller that can do without the graph (a usage
report, lineage) catches ``StageflowError`` and says so, never a bare
``Exception``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.errors import InvalidSpec, Problem, SpecLimitExceeded, UsageError
from stageflow.spec.load import (
    DEFAULT_LIMITS,
    Limits,
    parse_document,
    pipeline_from_data,
    salvage_pipeline,
)
from stageflow.spec.models import Pipeline

if TYPE_CHECKING:
    from stageflow.runtime.store.base import RunRecord, Store

__all__ = ["load_pipeline", "pipeline_of_run", "registered_templates_only"]

_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def load_pipeline(target: str, limits: Limits = DEFAULT_LIMITS) -> Pipeline:
    """The pipeline ``target`` names; raise ``UsageError`` or ``InvalidSpec``."""
    path = Path(target)
    if path.suffix.lower() in _SUFFIXES:
        return _load_file(path, limits)
    if ":" in target:
        return _load_object(target)
    if path.exists():
        raise UsageError(
            f"{target}: unknown file type '{path.suffix}'; use .yaml, .yml or "
            ".json, or name a Python object as module:pipeline"
        )
    raise UsageError(f"{target}: no such file; give a .yaml/.json file or module:pipeline")


def pipeline_of_run(store: Store, run: RunRecord, *, importable: bool = False) -> Pipeline:
    """The pipeline version ``run`` used, as saved in ``store``, its source set to the
    run's (so its tasks start in the same folder again).

    ``importable``: also put the folder of the run's pipeline file on ``sys.path``,
    so its ``call:`` targets that live beside it import (what executing the run
    needs; reading it does not). Raises ``StoreError`` when the version is not in
    the store, ``InvalidSpec`` when the saved spec no longer builds.
    """
    import json

    record = store.get_pipeline(run.pipeline, run.pipeline_version)
    try:
        data = json.loads(record.spec_json)
    except ValueError as exc:
        raise InvalidSpec(
            [Problem(f"the saved spec of version '{run.pipeline_version}' is not JSON ({exc})")],
            pipeline=run.pipeline,
        ) from None
    if importable and run.source:
        folder = str(Path(run.source).parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
    pipeline = pipeline_from_data(data)
    pipeline._source = run.source
    return pipeline


def _load_file(path: Path, limits: Limits) -> Pipeline:
    data = _read_spec_file(path, limits)
    fmt = _SUFFIXES[path.suffix.lower()]
    doc = parse_document(data, fmt=fmt, source=str(path), limits=limits)  # type: ignore[arg-type]
    tasks = doc.get("tasks") if isinstance(doc, dict) else None
    if (
        isinstance(doc, dict)
        and isinstance(tasks, list)
        and any(isinstance(t, dict) and "use" in t for t in tasks)
    ):
        from stageflow.spec.templates import expand_templates  # only specs with groups

        doc = expand_templates(doc, _template_loader(limits), str(path.resolve()))
    # Before any validation: the checks of an invalid spec import `call:` targets too.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        pipeline = pipeline_from_data(doc, limits)
    except SpecLimitExceeded:
        raise
    except InvalidSpec as exc:
        raise _with_plan_problems(exc, doc) from None
    pipeline._source = str(path.resolve())
    return pipeline


def _template_loader(limits: Limits) -> Any:
    """Read a ``use:`` reference: a .yaml/.json path relative to the using file."""

    def load(reference: str, from_source: str) -> tuple[str, dict[str, Any]]:
        if _REGISTERED.fullmatch(reference):
            return _registered(reference)
        target = (Path(from_source).parent / reference).resolve()
        if target.suffix.lower() not in _SUFFIXES:
            raise UsageError(f"use: {reference!r}: a template is a .yaml, .yml or .json file")
        if not target.exists():
            raise UsageError(f"use: {reference!r}: no such file {target}")
        fmt = _SUFFIXES[target.suffix.lower()]
        data = _read_spec_file(target, limits, f"use: {reference!r}: ")
        raw = parse_document(data, fmt=fmt, source=str(target), limits=limits)  # type: ignore[arg-type]
        if not isinstance(raw, dict):
            raise UsageError(f"use: {reference!r}: {target} is not a pipeline mapping")
        return str(target), raw

    return load


def registered_templates_only(reference: str, from_source: str) -> tuple[str, dict[str, Any]]:
    """The ``use:`` loader for a spec sent over the API: saved pipeline versions only
    (``NAME@VERSION``, ``NAME@latest``); a path would read the server's files."""
    if _REGISTERED.fullmatch(reference):
        return _registered(reference)
    raise UsageError(
        f"use: {reference!r}: a spec sent to the server may use saved pipelines only "
        "(NAME@VERSION or NAME@latest), not a file"
    )


#: ``use: NAME@VERSION`` or ``use: NAME@latest``: a pipeline version saved in the store.
_REGISTERED = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]*@[A-Za-z0-9]+")


def _registered(reference: str) -> tuple[str, dict[str, Any]]:
    """A registered pipeline version (saved in the store when a run of it was created)."""
    import json

    from stageflow.runtime.settings import load_settings
    from stageflow.runtime.store import open_store

    name, _, version = reference.rpartition("@")
    settings = load_settings()
    store = open_store(settings.database_url, settings.home)
    try:
        record = (
            store.latest_pipeline(name)
            if version == "latest"
            else store.get_pipeline(name, version)
        )
    finally:
        store.close()
    raw = json.loads(record.spec_json)
    if not isinstance(raw, dict):
        raise UsageError(f"use: {reference!r}: the stored spec is not a pipeline mapping")
    return f"{record.name}@{record.version}", raw


def _read_spec_file(path: Path, limits: Limits, prefix: str = "") -> bytes:
    """The bytes of spec file ``path``, at most ``limits.max_bytes`` of them.

    Opened without blocking and checked to be a regular file before a byte is
    read; read with a bound rather than by the size the file reports (``/proc``
    files report 0). ``UsageError`` (prefixed with ``prefix``) for a missing,
    unreadable or irregular file; ``SpecLimitExceeded`` past the size limit.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UsageError(f"{prefix}{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{prefix}{path} is a folder; give the pipeline file inside it") from None
    except OSError as exc:
        raise UsageError(f"{prefix}{path}: cannot read it ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{prefix}{path} is a folder; give the pipeline file inside it")
        raise UsageError(
            f"{prefix}{path} is not a regular file (it is {_file_kind(info.st_mode)}); "
            "give a pipeline file saved on disk"
        )
    with os.fdopen(fd, "rb") as f:
        size = f"{info.st_size:,} bytes"
        if info.st_size <= limits.max_bytes:  # what it reports; read no more than the limit
            try:
                data = f.read(limits.max_bytes + 1)
            except OSError as exc:
                raise UsageError(
                    f"{prefix}{path}: cannot read it ({exc.strerror or exc})"
                ) from None
            if len(data) <= limits.max_bytes:
                return data
            size = f"more than {limits.max_bytes:,} bytes"
    raise SpecLimitExceeded(
        f"{prefix}{path} is {size}, over the limit of {limits.max_bytes:,} "
        "(STAGEFLOW_MAX_SPEC_BYTES)",
        limit="max_bytes",
    )


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"


def _with_plan_problems(exc: InvalidSpec, doc: object) -> InvalidSpec:
    """``exc`` plus what full validation finds in the rest of the spec (operators,
    cycles), so a user sees every problem at once rather than one round at a time."""
    from stageflow.runtime.plan import plan_problems

    partial = salvage_pipeline(doc)
    if partial is None:
        return exc
    found = exc.problems
    seen = set(found)
    more = [p for p in plan_problems(partial) if p not in seen]
    return InvalidSpec([*found, *more], pipeline=exc.pipeline) if more else exc


def _load_object(target: str) -> Pipeline:
    module_name, _, attr = target.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise UsageError(f"{target}: no such file {file}")
            folder = str(file.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module = importlib.import_module(file.stem)
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except ImportError as exc:
        raise UsageError(f"{target}: cannot import module '{module_name}': {exc}") from None
    except Exception as exc:  # the user's module raised while importing
        raise UsageError(
            f"{target}: importing '{module_name}' raised {type(exc).__name__}: {exc}"
        ) from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise UsageError(f"{target}: module '{module_name}' has no attribute '{attr}'")
    if callable(obj) and not isinstance(obj, Pipeline):
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(
                f"{target}: calling {attr}() raised {type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(obj, Pipeline):
        raise InvalidSpec(
            [
                Problem(
                    f"{target} is {type(obj).__name__} {_short(obj)}, not a stageflow Pipeline; "
                    "name a Pipeline object, or a function returning one"
                )
            ]
        )
    if getattr(module, "__file__", None):
        obj._source = str(Path(module.__file__ or "").resolve())
    return obj


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 40 else text[:37] + "..."
