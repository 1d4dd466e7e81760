"""What the CLI shows while a run goes and when it ends.

On a terminal: a live per-task table (rich) on stderr. Elsewhere: one plain
line per task that reaches a final state, on stderr. The end-of-run summary
(each task's state, duration and attempts, the critical path, the outputs of
the final tasks) goes to stdout in text mode; ``--format json`` prints only
the run's JSON object on stdout.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from stageflow.engine.scheduler import Transition
from stageflow.engine.states import FINAL_TASK_STATES
from stageflow.runtime.result import RunResult

__all__ = ["LineProgress", "LiveProgress", "render_summary"]

_MARK = {
    "success": "ok",
    "failed": "FAILED",
    "skipped": "skipped",
    "upstream_failed": "upstream failed",
    "cancelled": "cancelled",
}


class LineProgress:
    """Plain progress lines on a stream: one per task reaching a final state."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def __call__(self, t: Transition) -> None:
        if t.new in FINAL_TASK_STATES:
            extra = f": {t.message.splitlines()[0]}" if t.message else ""
            self.stream.write(f"[{t.new:>15}] {t.task_id}{extra}\n")
        elif t.new == "up_for_retry":
            self.stream.write(
                f"[{'retry':>15}] {t.task_id} attempt {t.attempt} failed: "
                f"{(t.message or '').splitlines()[0] if t.message else ''}\n"
            )

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()


class LiveProgress:
    """A rich live table of every task's state (terminal only)."""

    def __init__(self, task_ids: list[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.states = dict.fromkeys(task_ids, "pending")
        self.attempts = dict.fromkeys(task_ids, 0)
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.console = Console(stderr=True)
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)

    def __call__(self, t: Transition) -> None:
        self.states[t.task_id] = t.new
        self.attempts[t.task_id] = t.attempt
        if t.new == "running":
            self.started.setdefault(t.task_id, time.time())
        if t.new in FINAL_TASK_STATES:
            self.ended[t.task_id] = time.time()
        self.live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title="stageflow run", expand=False)
        table.add_column("task")
        table.add_column("state")
        table.add_column("attempt", justify="right")
        table.add_column("time", justify="right")
        colours = {
            "success": "green",
            "failed": "red",
            "running": "cyan",
            "queued": "yellow",
            "up_for_retry": "magenta",
            "upstream_failed": "red",
            "skipped": "dim",
            "cancelled": "dim",
        }
        now = time.time()
        for tid, state in list(self.states.items())[:60]:
            start = self.started.get(tid)
            took = f"{self.ended.get(tid, now) - start:.1f}s" if start else ""
            table.add_row(
                tid,
                f"[{colours.get(state, 'white')}]{state}[/]",
                str(self.attempts[tid] or ""),
                took,
            )
        if len(self.states) > 60:
            done = sum(s in FINAL_TASK_STATES for s in self.states.values())
            table.caption = f"{done}/{len(self.states)} tasks finished"
        return table

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)


def render_summary(result: RunResult, out: TextIO, *, outputs: bool = True) -> None:
    """A plain-text summary of a run."""
    took = ""
    if result.started_at is not None and result.ended_at is not None:  # unfinished: no time
        took = f" in {result.ended_at - result.started_at:.2f}s"
    out.write(f"run {result.run_id} of pipeline '{result.pipeline}': {result.state}{took}\n")
    width = max([len(t) for t in result.tasks] + [4])
    out.write(f"  {'task':<{width}}  {'state':<18} {'attempts':>8} {'duration':>9}\n")
    for tid, t in list(result.tasks.items())[:200]:
        d = f"{t.duration_s:.2f}s" if t.duration_s is not None else "-"
        state = f"{t.state} ({t.note})" if t.note else t.state  # success (cached), (fallback)
        out.write(f"  {tid:<{width}}  {state:<18} {t.attempts:>8} {d:>9}\n")
        if t.error and (t.state in ("failed", "upstream_failed", "cancelled") or t.note):
            out.write(f"  {'':<{width}}    {t.error.splitlines()[0]}\n")
    cached = sum(t.note == "cached" for t in result.tasks.values())
    if cached:
        out.write(f"{cached} of {len(result.tasks)} tasks cached (reused, not run)\n")
    if len(result.tasks) > 200:
        out.write(f"  ... and {len(result.tasks) - 200} more tasks\n")
    if result.critical_path:
        out.write(f"critical path: {' -> '.join(result.critical_path)}\n")
    if outputs:
        for line in _metric_lines(result)[-6:]:
            out.write(line + "\n")
        sinks = _sinks(result)
        for tid in sinks[:5]:
            value = result.tasks[tid].output
            if value is not None:
                out.write(f"output of {tid}: {_short(value)}\n")


def _metric_lines(result: RunResult) -> list[str]:
    """One line per task whose output carries ``metrics`` (the ML operators' and any
    function's that returns ``{"metrics": {...}}``): the figures a run is judged by."""
    lines = []
    for tid, t in result.tasks.items():
        value = t.output
        if t.state != "success" or not isinstance(value, dict):
            continue
        metrics = value.get("metrics")
        if not isinstance(metrics, dict):
            continue
        shown = [
            f"{k}={v:.4g}"
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if shown:
            name = value.get("name") or value.get("best_model") or value.get("model_name")
            label = f"{tid} ({name})" if isinstance(name, str) else tid
            lines.append(f"metrics of {label}: {', '.join(shown[:8])}")
    return lines


def _sinks(result: RunResult) -> list[str]:
    """The last task of the pipeline that succeeded (not an element of a mapped task)."""
    done = [tid for tid, t in result.tasks.items() if t.state == "success" and "[" not in tid]
    return done[-1:]


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if type(value).__name__ == "DataFrame" and isinstance(shape, tuple) and len(shape) == 2:
        columns = ", ".join(map(str, list(value.columns)[:6]))
        return f"a DataFrame of {shape[0]} rows x {shape[1]} columns ({columns}, ...)"
    text = repr(value) if not isinstance(value, dict) else _dict_text(value)
    return text if len(text) <= 600 else text[:597] + "..."


def _dict_text(value: dict[Any, Any]) -> str:
    import json

    try:
        return json.dumps(value, indent=2, default=str)
    except (TypeError, ValueError):
        return repr(value)
