"""``data_validation``'s ``pandera`` rule: a pandera ``DataFrameSchema`` checks the data.

The schema comes from a YAML ``file`` (relative to the pipeline's folder, or any
fsspec URL), inline ``yaml`` (pandera's ``DataFrameSchema.from_yaml`` format), or
``call: module:object`` (a ``DataFrameSchema``, or a ``DataFrameModel`` class).
Importing a module runs its code, so ``call`` is spelt as every other ``call``:
``operators.registry.imports_code`` counts it and over the API only an admin may
save or run it. The data is validated with ``lazy=True``; each (column, check)
that failed becomes one failed check, ``pandera(COLUMN: CHECK)``, with its
failure cases as ``samples`` (``{failure_case, _row}``) and ``rate`` when pandera
names their rows; a frame that passes gives one passed check ``pandera``. The
data passes through unchanged (the schema's coercions are not applied).

pandera is optional (``stageflow[pandera]``) and imported here only. Inline YAML
is checked when the parameters are (``stageflow validate``): as YAML and, where
pandera is installed, as a schema. pandera finds a YAML check by
``getattr(Check, name)``, so a check name starting with ``_`` is refused.
No state.
"""

from __future__ import annotations

import importlib
import io
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stageflow.errors import MissingExtra, ObjectStorageError
from stageflow.operators import object_storage
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.ml.quality import failed_check, templated

__all__ = ["PanderaRule", "pandera_checks", "read_schema_file", "schema_from_yaml"]

_CALL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class PanderaRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(default=None, description="a pandera YAML schema file")
    yaml: str | None = Field(default=None, description="or the YAML itself")
    call: str | None = Field(
        default=None, description="or module:object, a DataFrameSchema or DataFrameModel"
    )

    @model_validator(mode="after")
    def _one(self) -> PanderaRule:
        given = [k for k in ("file", "yaml", "call") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give one of file (a YAML schema file), yaml (the schema's YAML) or "
                "call (module:object)" + (f"; got {', '.join(given)}" if given else "")
            )
        if self.call is not None and not _CALL.fullmatch(self.call):
            raise ValueError(f"call {self.call!r} is not module:object (e.g. schemas:orders)")
        if self.yaml is not None and not templated(self.yaml):
            schema_from_yaml(self.yaml, check_only=True)
        return self

    @field_validator("file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("file is empty; give the schema's path")
        return value


def pandera_checks(
    frame: Any, rule: PanderaRule, ctx: TaskContext, keep: int
) -> list[dict[str, Any]]:
    """Validate with the schema (``lazy=True``): one failed check per (column, check)
    that pandera reports, or one passed check ``pandera``."""
    pa = _pandera()
    schema = _load_schema(rule, ctx)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return _failure_checks(exc.failure_cases, len(frame), keep)
    except pa.errors.SchemaError as exc:  # raised eagerly by some checks even when lazy
        return [failed_check("pandera", str(exc).splitlines()[0])]
    except pa.errors.SchemaDefinitionError as exc:
        raise TaskFailed(f"data_validation: pandera schema: {exc}", retryable=False) from None
    return [
        {
            "check": "pandera",
            "passed": True,
            "failing": 0,
            "detail": f"the schema's {len(schema.columns)} columns and their checks hold",
        }
    ]


def schema_from_yaml(text: str, *, check_only: bool = False) -> Any:
    """The ``DataFrameSchema`` the YAML describes; ``ValueError`` saying why not.

    ``check_only``: without pandera installed, only the YAML is checked (the
    worker that runs the task needs it; there a missing pandera names its extra)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"the pandera schema is not YAML: {_one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ValueError("the pandera schema must be a YAML mapping (columns: ..., checks: ...)")
    private = _private_name(data)
    if private is not None:
        raise ValueError(
            f"the pandera schema names {private!r}; a check name may not start with '_'"
        )
    try:
        pa = _pandera()
    except MissingExtra:
        if check_only:
            return None
        raise
    try:
        return pa.DataFrameSchema.from_yaml(io.StringIO(text))
    except Exception as exc:  # pandera's own errors, or a KeyError/TypeError for a bad shape
        raise ValueError(
            f"the pandera schema does not load: {type(exc).__name__}: {_one_line(exc)}"
        ) from None


def _load_schema(rule: PanderaRule, ctx: TaskContext) -> Any:
    if rule.call is not None:
        module_name, _, attr = rule.call.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise TaskFailed(
                f"data_validation: pandera.call {rule.call!r}: {type(exc).__name__}: {exc}",
                retryable=False,
            ) from None
        if isinstance(obj, type) and hasattr(obj, "to_schema"):  # a DataFrameModel
            obj = obj.to_schema()
        if not hasattr(obj, "validate") or not hasattr(obj, "columns"):
            raise TaskFailed(
                f"data_validation: pandera.call {rule.call!r} is a {type(obj).__name__}, "
                "not a pandera DataFrameSchema or DataFrameModel",
                retryable=False,
            )
        return obj
    if rule.yaml is not None:
        text = rule.yaml
    else:
        text = read_schema_file(ctx.resolve_path(str(rule.file)))
    try:
        return schema_from_yaml(text)
    except ValueError as exc:
        raise TaskFailed(f"data_validation: pandera: {exc}", retryable=False) from None


def read_schema_file(url: str) -> str:
    """The text of a schema file (a local path or a URL, read through
    ``operators.object_storage``); ``TaskFailed`` if it cannot be read."""
    if "://" in url:
        try:
            data = object_storage.read_bytes(url, "data_validation: pandera.file")
        except ObjectStorageError as exc:
            raise TaskFailed(str(exc), retryable=exc.retryable) from None
    else:
        try:
            data = Path(url).read_bytes()
        except FileNotFoundError:
            raise TaskFailed(
                f"data_validation: pandera.file {url} does not exist", retryable=False
            ) from None
        except OSError as exc:
            raise TaskFailed(f"data_validation: pandera.file {url}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TaskFailed(
            f"data_validation: pandera.file {url} is not UTF-8 text; give a YAML schema",
            retryable=False,
        ) from None


def _failure_checks(cases: Any, rows: int, keep: int) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    records = json.loads(cases.to_json(orient="records", default_handler=str))
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in records:
        column, what = item.get("column"), item.get("check")
        label = f"pandera({column}: {what})" if column not in (None, "") else f"pandera({what})"
        groups.setdefault(label, []).append(item)
    for label, items in groups.items():
        shown = ", ".join(str(i.get("failure_case")) for i in items[:5])
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        indexed = [i for i in items if i.get("index") is not None]
        check: dict[str, Any] = {
            "check": label,
            "passed": False,
            "failing": len(items),
            "detail": f"{len(items)} failure case{'s' if len(items) != 1 else ''}: {shown}{more}",
            "samples": [
                {"failure_case": i.get("failure_case"), "_row": i.get("index")}
                for i in items[:keep]
            ],
        }
        if indexed and rows:
            check["rate"] = len(indexed) / rows
        checks.append(check)
    return checks


def _pandera() -> Any:
    try:
        return importlib.import_module("pandera.pandas")
    except ImportError as exc:
        raise MissingExtra(
            "the pandera rule needs pandera, which is not installed: "
            "pip install 'stageflow[pandera]'"
        ) from exc


def _private_name(value: Any, names_columns: bool = False) -> str | None:
    """A check name (or any other key) starting with ``_``: pandera looks a YAML check up
    with ``getattr(Check, name)``, which must reach only its public checks. Column
    names (the keys under ``columns:``) and ``metadata`` may be anything."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "metadata":
                continue
            if not names_columns and isinstance(key, str) and key.startswith("_"):
                return key
            if key == "check_name" and isinstance(item, str) and item.startswith("_"):
                return item
            found = _private_name(item, names_columns=key == "columns" and isinstance(item, dict))
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _private_name(item)
            if found is not None:
                return found
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
