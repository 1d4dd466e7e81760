"""A failed task's error as the summary and the plain progress lines show it: the
first line, then the last lines of its output, bounded."""

from __future__ import annotations

import io

from stageflow.engine.scheduler import Transition
from stageflow.runtime.result import RunResult, TaskResult
from stageflow.service.progress import LineProgress, render_summary

BASH_ERROR = "bash command exited with code 2; last output:\n" + "\n".join(
    f"line {i}" for i in range(3, 8)
)


def _summary(error: str) -> str:
    tasks = {"b": TaskResult("b", "failed", 1, 0.0, 1.0, error)}
    out = io.StringIO()
    render_summary(RunResult("r1", "p", "failed", 0.0, 1.0, tasks, ["b"]), out)
    return out.getvalue()


def test_the_summary_shows_the_last_lines_of_a_failed_tasks_output() -> None:
    text = _summary(BASH_ERROR)
    assert "bash command exited with code 2; last output:\n" in text
    for i in range(3, 8):
        assert f"line {i}\n" in text
    # the output lines sit under the error's first line, indented further
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if "last output:" in line)
    assert lines[head + 1].startswith(" " * (lines[head].index("bash") + 2))


def test_the_summary_bounds_a_long_error() -> None:
    error = "ValueError: bad rows\n" + "\n".join(f"row {i} " + "x" * 300 for i in range(50))
    text = _summary(error)
    assert "ValueError: bad rows" in text
    assert "row 49" in text and "row 40" not in text  # the last lines only
    tail = text.split("ValueError: bad rows\n", 1)[1].split("critical path")[0]
    assert len(tail) <= 700


def test_a_one_line_error_stays_one_line() -> None:
    text = _summary("ValueError: bad rows in extract")
    assert text.count("bad rows") == 1


def test_the_progress_line_of_a_failed_task_shows_its_last_output() -> None:
    out = io.StringIO()
    progress = LineProgress(out)
    progress(Transition("b", "running", "failed", 1, 0.0, BASH_ERROR))
    text = out.getvalue()
    assert text.startswith("[         failed] b: bash command exited with code 2; last output:\n")
    assert "line 3" in text and "line 7" in text
