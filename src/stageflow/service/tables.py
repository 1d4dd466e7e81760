"""Text tables of the reports the operations return: a run's usage, cost per
pipeline per day, per-task statistics. Each function returns lines (no newline);
the caller prints them. Nothing here reads a store or a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from stageflow.runtime.usage import format_gb

if TYPE_CHECKING:
    from stageflow.runtime.stats import PipelineStats
    from stageflow.runtime.usage import CostRow, RunReport

__all__ = ["prices_text", "render_cost", "render_run_report", "render_stats", "stamp"]

_MAX_TASK_LINES = 200  # as the run summary: a huge run's table is cut here


def render_run_report(report: RunReport) -> list[str]:
    """The text sections of a run's usage report (empty sections are left out)."""
    lines: list[str] = []
    zero = report.zero
    if report.path:
        width = max([len(s.task_id) for s in report.path] + [4])
        end = report.path[-1].ended_at
        at = f" at +{_seconds(end - zero)}" if zero is not None else ""
        lines.append(f"measured critical path (the chain that decided the run's end{at}):")
        lines.append(f"  {'task':<{width}}  {'attempts':>8} {'queued':>9} {'ran':>9} {'ended':>10}")
        for s in report.path:
            ended = f"+{_seconds(s.ended_at - zero)}" if zero is not None else "-"
            lines.append(
                f"  {s.task_id:<{width}}  {s.attempts:>8} {_seconds(s.wait_s):>9} "
                f"{_seconds(s.run_s):>9} {ended:>10}"
            )
    measured = [
        u
        for u in report.usage
        if u.request
        or u.cpu_seconds is not None
        or u.peak_rss_mb is not None
        or u.gpu_seconds is not None
    ]
    if measured:
        width = max([len(u.task_id) for u in measured] + [4])
        priced = report.cost is not None
        lines.append("usage per task:")
        lines.append(
            f"  {'task':<{width}}  {'cpu s':>9} {'peak MiB':>9} {'gpu s':>8}"
            + (f" {'cost':>10}" if priced else "")
            + "  requested"
        )
        for u in measured[:_MAX_TASK_LINES]:
            cost = f" {_money(u.cost):>10}" if priced else ""
            lines.append(
                f"  {u.task_id:<{width}}  {_number(u.cpu_seconds, 2):>9} "
                f"{_number(u.peak_rss_mb, 1):>9} {_number(u.gpu_seconds, 2):>8}{cost}  "
                f"{_request_text(u.request, u.gpu_devices)}"
            )
        if len(measured) > _MAX_TASK_LINES:
            lines.append(f"  ... and {len(measured) - _MAX_TASK_LINES} more tasks")
        cpu = [u.cpu_seconds for u in measured if u.cpu_seconds is not None]
        peak = [u.peak_rss_mb for u in measured if u.peak_rss_mb is not None]
        gpu = [u.gpu_seconds for u in measured if u.gpu_seconds is not None]
        total = f" {_money(report.cost):>10}" if priced and report.cost is not None else ""
        lines.append(  # the run: CPU and GPU seconds add up; the peak is the largest
            f"  {'run':<{width}}  {_number(sum(cpu) if cpu else None, 2):>9} "
            f"{_number(max(peak) if peak else None, 1):>9} "
            f"{_number(sum(gpu) if gpu else None, 2):>8}{total}  (largest peak of one task)"
        )
    if report.cost is not None:
        lines.append(f"cost: {_money(report.cost)} ({prices_text(report.prices)})")
    advice = [e.recommendation for e in report.history if e.recommendation]
    if advice:
        runs = "run" if report.history_runs == 1 else f"{report.history_runs} runs"
        lines.append(f"right-sizing (from the last {runs} of '{report.run.pipeline}'):")
        lines.extend(f"  {line}" for line in advice)
    return lines


def render_cost(rows: Sequence[CostRow], prices: Mapping[str, float]) -> list[str]:
    """The cost table: one line per pipeline per day, then the total."""
    priced = bool(prices)
    width = max([len(r.pipeline) for r in rows] + [len("pipeline")])
    head = f"{'pipeline':<{width}}  {'day':<10} {'runs':>6} {'task-hours':>11}"
    lines = [head + (f" {'cost':>12}" if priced else "")]
    for r in rows:
        lines.append(
            f"{r.pipeline:<{width}}  {r.day:<10} {r.runs:>6} {r.task_hours:>11.4f}"
            + (f" {_money(r.cost):>12}" if priced else "")
        )
    total_cost = sum(r.cost for r in rows)
    lines.append(
        f"{'total':<{width}}  {'':<10} {sum(r.runs for r in rows):>6} "
        f"{sum(r.task_hours for r in rows):>11.4f}"
        + (f" {_money(total_cost):>12}" if priced else "")
    )
    return lines


def prices_text(prices: Mapping[str, float]) -> str:
    """``cpu_hour=0.05, gpu_hour=2.5``: the prices as configured."""
    return ", ".join(f"{k}={v:g}" for k, v in prices.items())


def stamp(ts: float | None) -> str:
    """``2026-03-01 12:00:07`` (UTC), or ``-``."""
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_stats(stats: PipelineStats) -> list[str]:
    """The text table: one line per task, then the runs by state."""
    head = ("task", "runs", "ok", "failed", "other", "success", "p50", "p95", "last failure")
    table = [head]
    for t in stats.tasks:
        last = "-"
        if t.last_failure_at is not None:
            last = f"{stamp(t.last_failure_at)} {t.last_failure or ''}".rstrip()
        table.append(
            (
                t.task_id,
                str(t.runs),
                str(t.successes),
                str(t.failures),
                str(t.other),
                "-" if t.success_rate is None else f"{t.success_rate * 100:.1f}%",
                _seconds(t.p50_seconds),
                _seconds(t.p95_seconds),
                last,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = []
    for row in table:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    states = ", ".join(f"{n} {s}" for s, n in sorted(stats.runs_by_state.items()))
    lines.append(f"runs: {stats.runs} ({states})")
    return lines


def _request_text(request: Mapping[str, float], devices: str | None) -> str:
    if not request:
        return "nothing declared"
    parts = []
    for key, value in request.items():
        if key == "memory_gb":
            parts.append(f"memory {format_gb(value)}")
        else:
            parts.append(f"{key} {value:g}")
    if devices:
        parts.append(f"devices {devices}")
    return ", ".join(parts)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    """Four decimals; an amount under 0.0001 in scientific notation, so a
    cost is never shown as 0 when it is not."""
    if value is None:
        return "-"
    return f"{value:.4f}" if value == 0 or value >= 0.0001 else f"{value:.1e}"
