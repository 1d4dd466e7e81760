"""A run's outcome (``runtime.result.RunResult``): its critical path, computed lazily."""

from __future__ import annotations

from stageflow.runtime.result import RunResult, TaskResult


def tasks() -> dict[str, TaskResult]:
    return {
        "a": TaskResult("a", "success", 1, 1.0, 2.0, None),
        "b": TaskResult("b", "success", 1, 2.0, 4.0, None),
    }


def test_a_callable_path_is_computed_once_on_first_read() -> None:
    calls: list[None] = []

    def compute() -> list[str]:
        calls.append(None)
        return ["a", "b"]

    result = RunResult("r1", "churn", "success", 1.0, 4.0, tasks(), compute)
    assert calls == []  # nothing computed until someone asks

    assert result.critical_path == ["a", "b"]
    assert result.critical_path == ["a", "b"]
    assert len(calls) == 1


def test_a_list_is_returned_as_it_is() -> None:
    path = ["a", "b"]
    result = RunResult("r1", "churn", "success", 1.0, 4.0, tasks(), path)

    assert result.critical_path is path


def test_a_positional_list_still_works() -> None:
    result = RunResult("r1", "churn", "success", 1.0, 4.0, tasks(), ["a", "b"])

    assert result.critical_path == ["a", "b"]
    assert result.tasks == tasks()


def test_the_setter_replaces_the_path() -> None:
    calls: list[None] = []

    def compute() -> list[str]:
        calls.append(None)
        return ["a"]

    result = RunResult("r1", "churn", "success", 1.0, 4.0, tasks(), path=compute)

    result.critical_path = ["b"]

    assert result.critical_path == ["b"]
    assert calls == []  # the function it replaced is never called


def test_no_path_reads_as_empty() -> None:
    assert RunResult("r1", "churn", "success", None, None).critical_path == []
    assert RunResult("r1", "churn", "success", None, None, path=lambda: []).critical_path == []


def test_the_path_is_not_part_of_equality_or_repr() -> None:
    one = RunResult("r1", "churn", "success", 1.0, 4.0, tasks(), ["a"])
    other = RunResult("r1", "churn", "success", 1.0, 4.0, tasks(), ["b"])

    assert one == other
    assert "path" not in repr(one)
    assert "'a'" not in repr(RunResult("r1", "churn", "failed", None, None, {}, ["a"]))
