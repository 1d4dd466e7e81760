"""The ``custom_script`` operator (seed 001): a script, run by the ``python`` or ``bash`` operator.

It is an alias, not a third implementation: ``script_type: bash`` hands the
script to the ``bash`` operator (same environment, log, timeout and
cancellation handling), ``script_type: python`` (the default) runs it through
the ``python`` operator as the body of a function. A python script sees
``inputs`` (upstream outputs by task id), ``params`` (the run's parameters plus
this task's ``parameters``) and ``context`` (the ``TaskContext``); whatever it
assigns to ``result`` is the task's output. Give ``script_content`` or
``script_path``: a relative path starts at the pipeline's folder, for both
script types (``operators/paths.py``), and a missing file fails the task
before anything runs.

Example::

    - id: transform
      operator: custom_script
      upstream: [extract]
      parameters:
        script_content: |
          frame = inputs["extract"]
          result = frame.assign(total=frame.price * frame.quantity)
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stageflow.operators.base import Operator, TaskContext, TaskFailed
from stageflow.operators.bash import BashOperator, BashParams
from stageflow.operators.python import PythonOperator

__all__ = ["CustomScript", "ScriptParams"]


class ScriptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    script_type: Literal["python", "bash"] = Field(default="python", description="python or bash")
    script_content: str | None = Field(default=None, description="the script itself")
    script_path: str | None = Field(
        default=None, description="a file holding the script, relative to the pipeline's folder"
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="extra values for `params` (python scripts)"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment (bash)")

    @model_validator(mode="after")
    def _one_script(self) -> ScriptParams:
        if (self.script_content is None) == (self.script_path is None):
            raise ValueError("give exactly one of script_content and script_path")
        return self


class CustomScript(Operator):
    """Run a python or bash script (delegates to the python/bash operators)."""

    name = "custom_script"
    Params = ScriptParams

    def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, ScriptParams)
        path = None if params.script_path is None else Path(ctx.resolve_path(params.script_path))
        if params.script_type == "bash":
            if path is not None and not path.is_file():
                raise TaskFailed(_missing(params, path))
            command = params.script_content or f"bash {shlex.quote(str(path))}"
            return BashOperator().run(BashParams(command=command, env=params.env), inputs, ctx)
        source, filename = _source(params, path)
        try:
            code = compile(source, filename, "exec")
        except SyntaxError as exc:
            raise TaskFailed(
                f"custom_script: syntax error in {filename} line {exc.lineno}: {exc.msg}"
            ) from None
        values = {**ctx.params, **params.parameters}
        upstream = dict(inputs)

        def script(context: TaskContext) -> Any:
            namespace: dict[str, Any] = {
                "__name__": "__stageflow_script__",
                "inputs": upstream,
                "params": values,
                "context": context,
            }
            exec(code, namespace)  # noqa: S102 - the user's own script, by design (like bash)
            return namespace.get("result")

        return PythonOperator(script).run(PythonOperator.Params(), {}, ctx)


OPERATOR = CustomScript


def _source(params: ScriptParams, path: Path | None) -> tuple[str, str]:
    if params.script_content is not None or path is None:
        return params.script_content or "", "<script_content>"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (FileNotFoundError, IsADirectoryError):
        raise TaskFailed(_missing(params, path)) from None
    except OSError as exc:
        raise TaskFailed(f"custom_script: cannot read {path}: {exc.strerror}") from None


def _missing(params: ScriptParams, path: Path) -> str:
    given = params.script_path or str(path)
    if given == str(path):
        return f"custom_script: no such script: {path}"
    return (
        f"custom_script: no such script: {path} (script_path {given!r}; a relative "
        "path starts at the pipeline's folder)"
    )
