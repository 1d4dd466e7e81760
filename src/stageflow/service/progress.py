"""What the CLI shows while a run goes and when it ends.

On a terminal: a live view (rich) on stderr: the run id and pipeline, done/total,
elapsed time, a table of tasks redrawn on a timer, failed tasks' last error
lines and stageflow's warnings. Elsewhere: the run id when it starts, then one
plain line per task that reaches a final state, on stderr. The end-of-run summary
(each task's state, duration and attempts, the critical path, the outputs of
the final tasks) goes to stdout in text mode; ``--format json`` prints only
the run's JSON object on stdout.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from stageflow.engine.error_lines import error_lines as _error_lines
from stageflow.engine.scheduler import Transition
from stageflow.engine.states import FINAL_TASK_STATES
from stageflow.runtime.result import RunResult

if TYPE_CHECKING:
    from stageflow.runtime.runner import RunStarted

__all__ = ["LineProgress", "LiveProgress", "render_summary"]

_MARK = {
    "success": "ok",
    "failed": "FAILED",
    "skipped": "skipped",
    "upstream_failed": "upstream failed",
    "cancelled": "cancelled",
}


class LineProgress:
    """Plain progress lines on a stream: the run's id when it starts, then one line
    per task reaching a final state or failing an attempt that will be retried."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.run_id: str | None = None
        # stageflow's own warnings (a retry, an approval) as progress lines, once each,
        # instead of a log line beside a progress line that says the same
        self._divert = _Divert(self._warning, only_stageflow=True)

    def started(self, info: RunStarted) -> None:
        self.run_id = info.run_id
        verb = "resumed" if info.resumed else "started"
        self.stream.write(
            f"[{verb:>15}] run {info.run_id} of pipeline '{info.pipeline}' "
            f"({len(info.task_ids)} tasks)\n"
        )
        self._divert.install()

    def _warning(self, text: str) -> None:
        self.stream.write(f"[{'warning':>15}] {text}\n")

    def __call__(self, t: Transition) -> None:
        if t.new in FINAL_TASK_STATES:
            lines = _error_lines(t.message) if t.message else []
            extra = f": {lines[0]}" if lines else ""
            tail = lines[1:] if t.new == "failed" else []
            more = "".join(f"{'':>20}{line}\n" for line in tail)
            self.stream.write(f"[{t.new:>15}] {t.task_id}{extra}\n{more}")

    def interrupted(self, count: int, line: str) -> None:
        """A Ctrl-C arrived (``service.interrupts``): say what happens now."""
        self.stream.write(line + "\n")
        self.stream.flush()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._divert.remove()
        self.stream.flush()


_COLOURS = {
    "success": "green",
    "failed": "red",
    "running": "cyan",
    "queued": "yellow",
    "up_for_retry": "magenta",
    "awaiting_approval": "magenta",
    "sensing": "magenta",
    "upstream_failed": "red",
    "skipped": "dim",
    "cancelled": "dim",
}
_ROWS = 40  # at most this many task rows; the busiest first when there are more
_MESSAGES = 8  # the last warnings shown under the table
_ERROR_LINES = 3  # a failed task's last lines of error


class LiveProgress:
    """A live per-task view on a terminal (rich), redrawn on a timer.

    Policy. The view starts when the run is claimed (``started``), so its first
    frame names the run id and the pipeline. ``__call__`` (a transition, from
    whichever thread runs the step) only updates dictionaries; rich's refresh
    thread draws them 4 times a second, so a running task's time ticks and a
    100,000-task run pays nothing per task for drawing. The console writes to
    the real terminal, never through ``sys.stderr``: task output routing
    (``runtime.logs``) replaces ``sys.stdout``/``sys.stderr``, and rich's own
    redirection of them is off, so nothing can write back into the view. The
    log records that would print on stderr meanwhile (stageflow's warnings:
    retries, approvals, unpauses) are shown once, under the table, instead.

    State: each task's state, attempt, start/end times and last error; the
    warnings; the run's id, pipeline and start time. No lock: the step's thread
    writes single dictionary entries, the refresh thread copies whole dictionaries
    (both atomic under the GIL), and a Ctrl-C handler must never wait on a lock
    its own thread may hold."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.states: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.started_at: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.messages: list[str] = []
        self.run_id: str | None = None
        self.pipeline = ""
        self.note = "(Ctrl-C cancels)"  # what Ctrl-C does now, or what it did
        self.t0 = time.time()
        self.console = Console(file=stream or _terminal_stream(), stderr=True)
        self.live: Any = None
        self._divert = _Divert(self._warning)

    def started(self, info: RunStarted) -> None:
        """The run is claimed: show its id and tasks (the view starts here)."""
        from rich.live import Live

        self.run_id = info.run_id
        self.pipeline = info.pipeline
        self.t0 = time.time()
        for tid in info.task_ids:
            self.states.setdefault(tid, "pending")
            self.attempts.setdefault(tid, 0)
        if self.live is None:
            self.live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=4,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._divert.install()
            self.live.start()

    def __call__(self, t: Transition) -> None:
        tid = t.task_id
        self.states[tid] = t.new
        self.attempts[tid] = t.attempt
        if t.new == "running":
            self.started_at.setdefault(tid, t.at)
        elif t.new in FINAL_TASK_STATES:
            self.ended[tid] = t.at
        if t.message and t.new in ("failed", "up_for_retry"):
            self.errors[tid] = t.message

    def _warning(self, text: str) -> None:
        if text not in self.messages:
            self.messages.append(text)

    def interrupted(self, count: int, line: str) -> None:
        """A Ctrl-C arrived (``service.interrupts``), in a signal handler on the main
        thread, which may hold this view's lock: nothing here waits for it unbounded.
        The first: the view says the run is being cancelled. The second: the process
        exits right after this, so the final frame is drawn from another thread, given
        half a second, and says the exit was not recorded."""
        from rich.text import Text

        if count == 1:
            self.note = "cancelling (Ctrl-C)"
            # printed from another thread: the console's lock may be held by the refresh
            threading.Thread(target=self.console.print, args=(Text(line),), daemon=True).start()
            return
        self.note = "exited at once (second Ctrl-C): the run stays resumable"
        live, self.live = self.live, None
        if live is not None:
            stopper = threading.Thread(target=live.stop, daemon=True)
            stopper.start()
            stopper.join(0.5)
        self.console.print(Text(line))

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        # Copies, without a lock: copying a dict of strings is atomic under the GIL, and
        # a lock here could deadlock with a Ctrl-C handler drawing the final frame.
        states = self.states.copy()
        attempts = self.attempts.copy()
        errors = self.errors.copy()
        messages = self.messages[-_MESSAGES:]
        now = time.time()
        done = sum(s in FINAL_TASK_STATES for s in states.values())
        failed = sum(s in ("failed", "upstream_failed") for s in states.values())
        head = Text()
        head.append(f"run {self.run_id}", style="bold")
        head.append(f" · pipeline '{self.pipeline}' · {done}/{len(states)} done")
        if failed:
            head.append(f" · {failed} failed", style="red")
        end = max(self.ended.values()) if done == len(states) and self.ended else now
        head.append(f" · {max(0.0, end - self.t0):.1f}s")
        if done < len(states) or self.note != "(Ctrl-C cancels)":
            head.append(f"   {self.note}", style="dim")
        table = Table(expand=False)
        table.add_column("task")
        table.add_column("state")
        table.add_column("attempt", justify="right")
        table.add_column("time", justify="right")
        shown = _rows(states)
        for tid in shown:
            state = states[tid]
            start = self.started_at.get(tid)
            took = f"{self.ended.get(tid, now) - start:.1f}s" if start is not None else ""
            # Text, not markup: a frame drawn while a line is printed with markup off
            # (rich passes its options down to the live renderable) stays right.
            table.add_row(
                Text(tid),
                Text(state, style=_COLOURS.get(state, "white")),
                str(attempts.get(tid) or ""),
                took,
            )
        if len(states) > len(shown):
            table.caption = f"{len(states) - len(shown)} more tasks not shown"
        parts: list[Any] = [head, table]
        for tid, message in errors.items():
            if states.get(tid) != "failed":
                continue
            lines = [line for line in message.splitlines() if line.strip()][-_ERROR_LINES:]
            text = Text(f"{tid} failed: ", style="red")
            text.append("\n  ".join(lines))
            parts.append(text)
        for message in messages:
            parts.append(Text(f"! {message}", style="yellow"))
        return Group(*parts)

    def __enter__(self) -> LiveProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()  # draws the final frame, which stays on the terminal
            self.live = None
        self._divert.remove()


class _Divert(logging.Filter):
    """While a run is shown, records that the terminal handlers would print go to
    ``sink`` instead, once each (the live view draws them; the line view prints
    them as progress lines). A task's own logging is in its log, and dropped here.
    ``only_stageflow``: other loggers' records print as usual."""

    def __init__(self, sink: Callable[[str], None], *, only_stageflow: bool = False) -> None:
        super().__init__()
        self.sink = sink
        self.only_stageflow = only_stageflow
        self.seen: set[str] = set()
        self._handlers: list[logging.Handler] = []

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:  # not the task-log router
                handler.addFilter(self)
                self._handlers.append(handler)

    def remove(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        from stageflow.runtime.logs import captured

        if self.only_stageflow and not record.name.startswith("stageflow"):
            return True
        if captured():
            return False  # a task's own logging: it is in the task's log
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let the handler report it
            return True
        if text not in self.seen:
            self.seen.add(text)
            self.sink(text)
        return False


def _rows(states: dict[str, str]) -> list[str]:
    """The task rows to show: all of them, or the busiest ``_ROWS`` (running, failed,
    retrying first, then the rest) in pipeline order, mapped children by index."""
    if len(states) <= _ROWS:
        return list(states)
    busy = ("running", "failed", "up_for_retry", "awaiting_approval", "sensing", "queued")
    first = [tid for tid, s in states.items() if s in busy][:_ROWS]
    keep = set(first)
    for tid in states:
        if len(keep) >= _ROWS:
            break
        keep.add(tid)
    return [tid for tid in states if tid in keep]


def _terminal_stream() -> TextIO:
    """The process's real stderr, under any wrapper installed since it started."""
    return sys.__stderr__ if sys.__stderr__ is not None else sys.stderr


def render_summary(result: RunResult, out: TextIO, *, outputs: bool = True) -> None:
    """A plain-text summary of a run."""
    took = ""
    if result.started_at is not None and result.ended_at is not None:  # unfinished: no time
        took = f" in {result.ended_at - result.started_at:.2f}s"
    out.write(f"run {result.run_id} of pipeline '{result.pipeline}': {result.state}{took}\n")
    width = max([len(t) for t in result.tasks] + [4])
    tables = any(t.rows_in is not None or t.rows_out is not None for t in result.tasks.values())
    rows_head = f" {'rows in -> out':>16}" if tables else ""
    out.write(f"  {'task':<{width}}  {'state':<18} {'attempts':>8} {'duration':>9}{rows_head}\n")
    for tid, t in list(result.tasks.items())[:200]:
        d = f"{t.duration_s:.2f}s" if t.duration_s is not None else "-"
        state = f"{t.state} ({t.note})" if t.note else t.state  # success (cached), (fallback)
        rows = f" {_rows_text(t.rows_in, t.rows_out):>16}" if tables else ""
        out.write(f"  {tid:<{width}}  {state:<18} {t.attempts:>8} {d:>9}{rows}\n")
        if t.error and (t.state in ("failed", "upstream_failed", "cancelled", "sensing") or t.note):
            first, *rest = _error_lines(t.error) or [""]
            out.write(f"  {'':<{width}}    {first}\n")
            for line in rest:  # the last lines of its output (a bash command's, say)
                out.write(f"  {'':<{width}}      {line}\n")
    if result.total_records_processed is not None:
        out.write(
            f"records processed: {result.total_records_processed:,} "
            f"(rows in {result.rows_in or 0:,}, rows out {result.rows_out or 0:,})\n"
        )
    cached = sum(t.cached for t in result.tasks.values())
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


def _rows_text(rows_in: int | None, rows_out: int | None) -> str:
    """``1,000 -> 990``; ``-`` where a side took or gave no table."""
    if rows_in is None and rows_out is None:
        return "-"
    left = "-" if rows_in is None else f"{rows_in:,}"
    right = "-" if rows_out is None else f"{rows_out:,}"
    return f"{left} -> {right}"


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
