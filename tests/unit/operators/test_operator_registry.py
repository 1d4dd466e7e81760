"""The operator registry (built-ins, register(), entry points) and Python binding."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stageflow.errors import UnknownOperator
from stageflow.operators import Operator, TaskContext, registry
from stageflow.operators.python import bind
from stageflow.spec.models import Task


def _ctx(params: Mapping[str, Any] | None = None) -> TaskContext:
    import logging

    return TaskContext(
        run_id="r1",
        task_id="t",
        attempt=1,
        params=params or {},
        work_dir=Path("/nonexistent"),
        log_path=Path("/nonexistent/log"),
        logger=logging.getLogger("test"),
        cancelled=threading.Event(),
    )


def test_builtins_are_known() -> None:
    assert {"python", "bash"} <= set(registry.names())
    assert registry.get("bash").name == "bash"


def test_unknown_operator_suggests_the_close_name() -> None:
    with pytest.raises(UnknownOperator) as info:
        registry.get("bsh", task="t1")
    assert "unknown operator 'bsh'; did you mean 'bash'?" in str(info.value)
    assert info.value.task == "t1"


def test_register_adds_an_operator_usable_by_a_task() -> None:
    class Shout(Operator):
        name = "shout_test"

        class Params(BaseModel):
            word: str

        def run(self, params: BaseModel, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
            assert isinstance(params, Shout.Params)
            return params.word.upper()

    registry.register(Shout)
    task = Task("t", operator="shout_test", parameters={"word": "hi"})
    assert registry.task_problems(task, task.parameters, {}) == []
    op, params = registry.instantiate(task, task.parameters)
    assert op.run(params, {}, _ctx()) == "HI"
    bad = registry.task_problems(Task("t", operator="shout_test"), {}, {})
    assert [p.field for p in bad] == ["parameters.word"]
    assert "needs parameter 'word'" in bad[0].message


@pytest.fixture
def plugin_dist(tmp_path: Path) -> Iterator[None]:
    """A real installed distribution (a .dist-info on sys.path) declaring an
    operator through the ``stageflow.operators`` entry-point group."""
    (tmp_path / "sf_plugin_demo.py").write_text(
        "from stageflow.operators import Operator\n"
        "class Echo(Operator):\n"
        "    name = 'echo_plugin'\n"
        "    def run(self, params, inputs, ctx):\n"
        "        return 'echo'\n"
        "class NotAnOperator:\n"
        "    pass\n"
    )
    info = tmp_path / "sf_plugin_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sf-plugin-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[stageflow.operators]\n"
        "echo_plugin = sf_plugin_demo:Echo\n"
        "broken_plugin = sf_plugin_demo:NotAnOperator\n"
    )
    sys.path.insert(0, str(tmp_path))
    registry._entry_points_loaded = False
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        registry._REGISTRY.pop("echo_plugin", None)
        registry._entry_points_loaded = False
        sys.modules.pop("sf_plugin_demo", None)


def test_entry_point_operators_are_found(plugin_dist: None) -> None:
    assert "echo_plugin" in registry.names()
    cls = registry.get("echo_plugin")
    assert cls().run(cls.Params(), {}, _ctx()) == "echo"
    # a plugin entry that is not an Operator is ignored, not fatal
    assert "broken_plugin" not in registry.names()


def f_named(load: int, scale: int = 2) -> int:
    return load * scale


def f_varargs(first: int, *rest: int) -> list[int]:
    return [first, *rest]


def f_ctx(context: TaskContext, threshold: float) -> tuple[str, float]:
    return context.task_id, threshold


def f_kwargs(a: int, **extra: Any) -> dict[str, Any]:
    return {"a": a, **extra}


@pytest.mark.parametrize(
    ("fn", "inputs", "parameters", "run_params", "expected"),
    [
        pytest.param(f_named, {"load": 3}, {}, {}, 6, id="upstream-by-name-default"),
        pytest.param(f_named, {"load": 3}, {"scale": 5}, {}, 15, id="task-parameter"),
        pytest.param(f_named, {"load": 3}, {}, {"scale": 7}, 21, id="run-parameter"),
        pytest.param(
            f_varargs,
            {"first": 1, "b": 2, "c": 3},
            {},
            {},
            [1, 2, 3],
            id="named-then-varargs-in-upstream-order",
        ),
        pytest.param(
            f_varargs, {"x": 9, "y": 8}, {"first": 0}, {}, [0, 9, 8], id="parameter-before-varargs"
        ),
        pytest.param(f_ctx, {}, {"threshold": 0.5}, {}, ("t", 0.5), id="context"),
        pytest.param(
            f_kwargs,
            {"a": 1},
            {"b": 2, "c": 3},
            {},
            {"a": 1, "b": 2, "c": 3},
            id="kwargs-get-the-rest",
        ),
    ],
)
def test_bind_wires_arguments(
    fn: Any,
    inputs: dict[str, Any],
    parameters: dict[str, Any],
    run_params: dict[str, Any],
    expected: Any,
) -> None:
    args, kwargs = bind(fn, inputs, parameters, _ctx(run_params))
    assert fn(*args, **kwargs) == expected


def test_bind_reads_dashed_upstream_ids_as_underscores() -> None:
    def fn(ingest_data: int) -> int:
        return ingest_data + 1

    args, kwargs = bind(fn, {"ingest-data": 41}, {}, _ctx())
    assert fn(*args, **kwargs) == 42


def test_bind_names_the_missing_parameter() -> None:
    with pytest.raises(TypeError, match="nothing provides parameter 'load'"):
        bind(f_named, {}, {}, _ctx())
