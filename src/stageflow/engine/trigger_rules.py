"""Whether a task may run, given how its direct upstream tasks ended.

Pure and O(1): ``decide(rule, counts)`` looks only at counts of upstream
outcomes, so the scheduler keeps one running tally per task and calls it on
every upstream completion. A verdict is given as soon as it is known: a rule
that can be met runs without waiting for the rest (``one_success`` with one
success), and a rule that can no longer be met ends the task at once
(``all_success`` with one failure).

Source. The semantics are Airflow's, as decided by the scheduler (which runs
with ``flag_upstream_failed=True``) in ``TriggerRuleDep._get_dep_statuses`` and
its inner ``_evaluate_direct_relatives``:

- apache/airflow ``airflow/ti_deps/deps/trigger_rule_dep.py`` at
  cbaed1f7e25f542c907cd18a5127f9c18cb9206f (2.x), unchanged for these rules
  in ``airflow-core/src/airflow/ti_deps/deps/trigger_rule_dep.py`` at
  c18ad48e6a44346a5777c07b7f3c1f4b8a2e5048 (3.x);
- ``all_done_min_one_success`` only exists from Airflow 3.1 (apache/airflow
  PR #53959), read in the same file of a mirror of apache main,
  dheerajturaga/airflow at e2a48be0ffc507eade3026118a6200da3733c9de.

Each rule runs in two steps there: the ``flag_upstream_failed`` block may
set the task ``skipped`` or ``upstream_failed`` for good; otherwise the dep
passes (run) or fails (wait). We fold both steps into one verdict.

Policy (s, f, uf, sk = upstream success, failed, upstream_failed, skipped;
n = total; done = s + f + uf + sk). Rows are checked top to bottom, the first
that matches wins; anything else is WAIT.

==============================  ==================  ==================  ================
rule                            RUN                 SKIP                UPSTREAM_FAILED
==============================  ==================  ==================  ================
(any rule, n == 0)              always
always                          always
all_success                     s == n              sk > 0 (2nd)        f + uf > 0 (1st)
all_failed                      f + uf == n         s + sk > 0
all_done                        done == n
all_done_min_one_success        done == n, s > 0    sk > 0 (1st)        done == n, s == 0
all_skipped                     sk == n             s + f + uf > 0
one_success                     s > 0               done == n, sk == n  done == n, s == 0
one_failed                      f + uf > 0          done == n, f+uf==0
one_done                        s + f > 0           done == n, s+f==0
none_failed                     s + sk == n                             f + uf > 0
none_failed_min_one_success     s + sk == n, s > 0  sk == n (2nd)       f + uf > 0 (1st)
none_skipped                    done == n, sk == 0  sk > 0
==============================  ==================  ==================  ================

Every rule reaches a final verdict once ``done == n``, so a task is never left
waiting on finished upstreams, and a final verdict never turns back to WAIT
as more upstream tasks finish.

Worth knowing, all straight from Airflow's code:

- ``all_success`` skips on a skipped upstream, but a failure seen at the same
  time wins (``upstream_failed``). A skip is decided while others still run.
- ``one_done`` counts only success and failed; upstreams that all end
  ``upstream_failed``/``skipped`` make it ``skipped``.
- ``none_failed`` runs when every upstream was skipped;
  ``none_failed_min_one_success`` is skipped then.
- ``all_done_min_one_success`` is skipped as soon as any upstream is
  skipped. Airflow's 3.1 release notes describe skipped as counting as done
  (apache/airflow issue #59925); the code does not, and we follow the code.

Where stageflow differs from Airflow, on purpose:

- A ``cancelled`` upstream is counted as ``upstream_failed`` (the caller puts
  it in ``UpstreamCounts.upstream_failed``). Airflow has no such state.
- There is no ``removed`` state, no mapped tasks and so no ``map_index``
  adjustments; Airflow's ``REMOVED`` verdict for ``all_success`` does not
  exist here. Hence Airflow main's extra ``none_failed_min_one_success`` row
  (done, no failure, s == 0 -> upstream_failed), reachable only through
  ``removed``, cannot arise and is not needed.
- No setup/teardown tasks (``_evaluate_setup_constraint``,
  ``all_done_setup_success``) and no ``depends_on_past``, so no
  ``wait_for_past_depends_before_skipping``.
- Only the scheduler's ``flag_upstream_failed=True`` mode exists: a verdict
  that Airflow would write as the task's state is final here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from stageflow.spec.models import TriggerRule

__all__ = ["UpstreamCounts", "Verdict", "decide"]


@dataclass(frozen=True, slots=True)
class UpstreamCounts:
    """How a task's direct upstream tasks have ended so far.

    ``upstream_failed`` includes upstream tasks that were ``cancelled``.
    Raises ``ValueError`` if a count is negative or more have ended than exist
    (a bug in the caller's tally).
    """

    total: int
    success: int = 0
    failed: int = 0
    upstream_failed: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        if min(self.total, self.success, self.failed, self.upstream_failed, self.skipped) < 0:
            raise ValueError(f"negative upstream count: {self!r}")
        if self.done > self.total:
            raise ValueError(f"more upstream tasks ended than exist: {self!r}")

    @property
    def done(self) -> int:
        """Upstream tasks in a final state."""
        return self.success + self.failed + self.upstream_failed + self.skipped


class Verdict(enum.Enum):
    """What to do with a pending task now."""

    WAIT = "wait"
    """Not decidable yet; ask again on the next upstream completion."""
    RUN = "run"
    """The task may be queued now."""
    SKIP = "skipped"
    """Final: the task ends ``skipped``."""
    UPSTREAM_FAILED = "upstream_failed"
    """Final: the task ends ``upstream_failed``."""


def decide(rule: TriggerRule, counts: UpstreamCounts) -> Verdict:
    """The verdict for a pending task with trigger ``rule`` and upstream ``counts``.

    A task with no upstream (``counts.total == 0``) always runs. Pure, O(1).
    """
    if counts.total == 0 or rule is TriggerRule.ALWAYS:
        return Verdict.RUN
    return _RULES[rule](counts)


def _all_success(c: UpstreamCounts) -> Verdict:
    if c.failed or c.upstream_failed:
        return Verdict.UPSTREAM_FAILED
    if c.skipped:
        return Verdict.SKIP
    return Verdict.RUN if c.success == c.total else Verdict.WAIT


def _all_failed(c: UpstreamCounts) -> Verdict:
    if c.success or c.skipped:
        return Verdict.SKIP
    return Verdict.RUN if c.failed + c.upstream_failed == c.total else Verdict.WAIT


def _all_done(c: UpstreamCounts) -> Verdict:
    return Verdict.RUN if c.done == c.total else Verdict.WAIT


def _all_done_min_one_success(c: UpstreamCounts) -> Verdict:
    # Airflow 3.1: "skipped tasks are not considered done" for this rule, so a
    # single skipped upstream skips the task at once.
    if c.skipped:
        return Verdict.SKIP
    if c.done < c.total:
        return Verdict.WAIT
    return Verdict.RUN if c.success else Verdict.UPSTREAM_FAILED


def _all_skipped(c: UpstreamCounts) -> Verdict:
    if c.success or c.failed or c.upstream_failed:
        return Verdict.SKIP
    return Verdict.RUN if c.skipped == c.total else Verdict.WAIT


def _one_success(c: UpstreamCounts) -> Verdict:
    if c.success:
        return Verdict.RUN
    if c.done < c.total:
        return Verdict.WAIT
    return Verdict.SKIP if c.skipped == c.total else Verdict.UPSTREAM_FAILED


def _one_failed(c: UpstreamCounts) -> Verdict:
    if c.failed or c.upstream_failed:
        return Verdict.RUN
    return Verdict.SKIP if c.done == c.total else Verdict.WAIT


def _one_done(c: UpstreamCounts) -> Verdict:
    # Airflow counts only success and failed here, not upstream_failed.
    if c.success or c.failed:
        return Verdict.RUN
    return Verdict.SKIP if c.done == c.total else Verdict.WAIT


def _none_failed(c: UpstreamCounts) -> Verdict:
    if c.failed or c.upstream_failed:
        return Verdict.UPSTREAM_FAILED
    return Verdict.RUN if c.success + c.skipped == c.total else Verdict.WAIT


def _none_failed_min_one_success(c: UpstreamCounts) -> Verdict:
    if c.failed or c.upstream_failed:
        return Verdict.UPSTREAM_FAILED
    if c.skipped == c.total:
        return Verdict.SKIP
    # No failure and not all skipped: once all are done, one succeeded.
    return Verdict.RUN if c.success + c.skipped == c.total else Verdict.WAIT


def _none_skipped(c: UpstreamCounts) -> Verdict:
    if c.skipped:
        return Verdict.SKIP
    return Verdict.RUN if c.done == c.total else Verdict.WAIT


def _always(c: UpstreamCounts) -> Verdict:
    return Verdict.RUN


_RULES = {
    TriggerRule.ALL_SUCCESS: _all_success,
    TriggerRule.ALL_FAILED: _all_failed,
    TriggerRule.ALL_DONE: _all_done,
    TriggerRule.ALL_DONE_MIN_ONE_SUCCESS: _all_done_min_one_success,
    TriggerRule.ALL_SKIPPED: _all_skipped,
    TriggerRule.ONE_SUCCESS: _one_success,
    TriggerRule.ONE_FAILED: _one_failed,
    TriggerRule.ONE_DONE: _one_done,
    TriggerRule.NONE_FAILED: _none_failed,
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: _none_failed_min_one_success,
    TriggerRule.NONE_SKIPPED: _none_skipped,
    TriggerRule.ALWAYS: _always,
}
