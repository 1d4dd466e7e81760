"""Trigger rules against Airflow's semantics, for every mix of upstream outcomes.

The reference below is written per rule, from apache/airflow
``trigger_rule_dep.py`` (``_evaluate_direct_relatives`` with
``flag_upstream_failed=True``), over a list of single upstream outcomes rather
than counts, so it shares no code or shape with ``decide``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stageflow.engine.trigger_rules import UpstreamCounts, Verdict, decide
from stageflow.spec.models import TriggerRule

TR = TriggerRule
V = Verdict
OUTCOMES = ("success", "failed", "upstream_failed", "skipped", "pending")
Outcomes = tuple[str, ...]

# --- reference: one function per rule, over outcomes like ("success", "pending") ----


def _finished(up: Outcomes) -> bool:
    return "pending" not in up


def _any(up: Outcomes, *states: str) -> bool:
    return any(o in states for o in up)


def _all(up: Outcomes, *states: str) -> bool:
    return all(o in states for o in up)


def ref_all_success(up: Outcomes) -> Verdict:
    # flag: upstream_failed or failed -> UPSTREAM_FAILED; elif skipped -> SKIPPED
    if _any(up, "failed", "upstream_failed"):
        return V.UPSTREAM_FAILED
    if _any(up, "skipped"):
        return V.SKIP
    # dep passes when upstream - success == 0
    return V.RUN if _all(up, "success") else V.WAIT


def ref_all_failed(up: Outcomes) -> Verdict:
    # flag: success or skipped -> SKIPPED
    if _any(up, "success", "skipped"):
        return V.SKIP
    # dep passes when upstream - failed - upstream_failed == 0
    return V.RUN if _all(up, "failed", "upstream_failed") else V.WAIT


def ref_all_done(up: Outcomes) -> Verdict:
    # no flag branch; passes when upstream_done
    return V.RUN if _finished(up) else V.WAIT


def ref_all_done_min_one_success(up: Outcomes) -> Verdict:
    # flag: skipped > 0 -> SKIPPED; elif all non-skipped done and success == 0 -> UPSTREAM_FAILED
    if _any(up, "skipped"):
        return V.SKIP
    if _finished(up) and not _any(up, "success"):
        return V.UPSTREAM_FAILED
    # dep: fails on skipped, on unfinished, on no success
    return V.RUN if _finished(up) and _any(up, "success") else V.WAIT


def ref_all_skipped(up: Outcomes) -> Verdict:
    # flag: success or failed or upstream_failed -> SKIPPED
    if _any(up, "success", "failed", "upstream_failed"):
        return V.SKIP
    return V.RUN if _all(up, "skipped") else V.WAIT


def ref_one_success(up: Outcomes) -> Verdict:
    # flag: done and all skipped -> SKIPPED; elif done and no success -> UPSTREAM_FAILED
    if _finished(up) and _all(up, "skipped"):
        return V.SKIP
    if _finished(up) and not _any(up, "success"):
        return V.UPSTREAM_FAILED
    # dep passes when success > 0, whatever else is still running
    return V.RUN if _any(up, "success") else V.WAIT


def ref_one_failed(up: Outcomes) -> Verdict:
    # flag: done and not (failed or upstream_failed) -> SKIPPED
    if _finished(up) and not _any(up, "failed", "upstream_failed"):
        return V.SKIP
    return V.RUN if _any(up, "failed", "upstream_failed") else V.WAIT


def ref_one_done(up: Outcomes) -> Verdict:
    # flag: done and not (failed or success) -> SKIPPED; upstream_failed does not count
    if _finished(up) and not _any(up, "failed", "success"):
        return V.SKIP
    return V.RUN if _any(up, "success", "failed") else V.WAIT


def ref_none_failed(up: Outcomes) -> Verdict:
    # flag: upstream_failed or failed -> UPSTREAM_FAILED
    if _any(up, "failed", "upstream_failed"):
        return V.UPSTREAM_FAILED
    # dep passes when upstream - success - skipped == 0 (all skipped runs)
    return V.RUN if _all(up, "success", "skipped") else V.WAIT


def ref_none_failed_min_one_success(up: Outcomes) -> Verdict:
    # flag: upstream_failed or failed -> UPSTREAM_FAILED; elif skipped == upstream -> SKIPPED
    if _any(up, "failed", "upstream_failed"):
        return V.UPSTREAM_FAILED
    if _all(up, "skipped"):
        return V.SKIP
    ok = _all(up, "success", "skipped") and _any(up, "success")
    return V.RUN if ok else V.WAIT


def ref_none_skipped(up: Outcomes) -> Verdict:
    # flag: skipped -> SKIPPED; dep fails while not done or any skipped
    if _any(up, "skipped"):
        return V.SKIP
    return V.RUN if _finished(up) else V.WAIT


def ref_always(up: Outcomes) -> Verdict:
    # _get_dep_statuses passes ALWAYS before looking at any upstream
    return V.RUN


REFERENCE: dict[TriggerRule, Callable[[Outcomes], Verdict]] = {
    TR.ALL_SUCCESS: ref_all_success,
    TR.ALL_FAILED: ref_all_failed,
    TR.ALL_DONE: ref_all_done,
    TR.ALL_DONE_MIN_ONE_SUCCESS: ref_all_done_min_one_success,
    TR.ALL_SKIPPED: ref_all_skipped,
    TR.ONE_SUCCESS: ref_one_success,
    TR.ONE_FAILED: ref_one_failed,
    TR.ONE_DONE: ref_one_done,
    TR.NONE_FAILED: ref_none_failed,
    TR.NONE_FAILED_MIN_ONE_SUCCESS: ref_none_failed_min_one_success,
    TR.NONE_SKIPPED: ref_none_skipped,
    TR.ALWAYS: ref_always,
}


def _counts(up: Outcomes) -> UpstreamCounts:
    return UpstreamCounts(
        total=len(up),
        success=up.count("success"),
        failed=up.count("failed"),
        upstream_failed=up.count("upstream_failed"),
        skipped=up.count("skipped"),
    )


def _mixes() -> Iterator[pytest.ParameterSet]:
    """Every rule x every multiset of outcomes for 1..3 upstream tasks."""
    for rule in TR:
        for total in range(1, 4):
            for up in itertools.combinations_with_replacement(OUTCOMES, total):
                expected = REFERENCE[rule](up)
                yield pytest.param(rule, up, expected, id=f"{rule}-{'+'.join(up)}")


def test_reference_covers_every_rule() -> None:
    assert set(REFERENCE) == set(TR)


@pytest.mark.parametrize(("rule", "upstream", "expected"), list(_mixes()))
def test_matches_airflow_reference(
    rule: TriggerRule, upstream: Outcomes, expected: Verdict
) -> None:
    assert decide(rule, _counts(upstream)) is expected


# --- the well-known behaviours, by name -------------------------------------------


def _c(s: int = 0, f: int = 0, uf: int = 0, sk: int = 0, pending: int = 0) -> UpstreamCounts:
    return UpstreamCounts(
        total=s + f + uf + sk + pending, success=s, failed=f, upstream_failed=uf, skipped=sk
    )


@pytest.mark.parametrize(
    ("rule", "counts", "expected"),
    [
        pytest.param(TR.ALL_SUCCESS, _c(s=2), V.RUN, id="all_success-all-succeeded"),
        pytest.param(TR.ALL_SUCCESS, _c(s=1, pending=1), V.WAIT, id="all_success-waits"),
        pytest.param(TR.ALL_SUCCESS, _c(s=1, sk=1), V.SKIP, id="all_success-one-skipped"),
        pytest.param(
            TR.ALL_SUCCESS, _c(f=1, pending=2), V.UPSTREAM_FAILED, id="all_success-fails-early"
        ),
        pytest.param(TR.ALL_SUCCESS, _c(sk=1, pending=2), V.SKIP, id="all_success-skips-early"),
        pytest.param(
            TR.ALL_SUCCESS, _c(f=1, sk=1), V.UPSTREAM_FAILED, id="all_success-failure-beats-skip"
        ),
        pytest.param(
            TR.ALL_SUCCESS, _c(uf=1, s=1), V.UPSTREAM_FAILED, id="all_success-cancelled-upstream"
        ),
        pytest.param(TR.ALL_FAILED, _c(f=1, s=1), V.SKIP, id="all_failed-one-success"),
        pytest.param(TR.ALL_FAILED, _c(s=1, pending=2), V.SKIP, id="all_failed-skips-early"),
        pytest.param(TR.ALL_FAILED, _c(f=1, uf=1), V.RUN, id="all_failed-failed-or-uf"),
        pytest.param(TR.ALL_DONE, _c(f=1, uf=1, sk=1), V.RUN, id="all_done-any-outcome"),
        pytest.param(TR.ALL_DONE, _c(s=2, pending=1), V.WAIT, id="all_done-waits"),
        pytest.param(
            TR.ALL_DONE_MIN_ONE_SUCCESS, _c(s=1, f=1), V.RUN, id="adm1s-success-and-failure"
        ),
        pytest.param(
            TR.ALL_DONE_MIN_ONE_SUCCESS, _c(s=1, pending=1), V.WAIT, id="adm1s-waits-for-all"
        ),
        pytest.param(
            TR.ALL_DONE_MIN_ONE_SUCCESS, _c(f=1, uf=1), V.UPSTREAM_FAILED, id="adm1s-no-success"
        ),
        pytest.param(
            TR.ALL_DONE_MIN_ONE_SUCCESS, _c(s=1, sk=1), V.SKIP, id="adm1s-skipped-upstream-skips"
        ),
        pytest.param(TR.ALL_SKIPPED, _c(sk=2), V.RUN, id="all_skipped-all-skipped"),
        pytest.param(TR.ALL_SKIPPED, _c(s=1, pending=1), V.SKIP, id="all_skipped-one-ran"),
        pytest.param(TR.ONE_SUCCESS, _c(s=1, pending=2), V.RUN, id="one_success-early"),
        pytest.param(TR.ONE_SUCCESS, _c(sk=3), V.SKIP, id="one_success-all-skipped"),
        pytest.param(
            TR.ONE_SUCCESS, _c(f=1, sk=1), V.UPSTREAM_FAILED, id="one_success-none-succeeded"
        ),
        pytest.param(TR.ONE_SUCCESS, _c(f=1, pending=1), V.WAIT, id="one_success-waits"),
        pytest.param(TR.ONE_FAILED, _c(s=3), V.SKIP, id="one_failed-all-success"),
        pytest.param(TR.ONE_FAILED, _c(f=1, pending=2), V.RUN, id="one_failed-early"),
        pytest.param(TR.ONE_FAILED, _c(uf=1, pending=1), V.RUN, id="one_failed-on-cancelled"),
        pytest.param(TR.ONE_DONE, _c(s=1, pending=2), V.RUN, id="one_done-early-success"),
        pytest.param(TR.ONE_DONE, _c(f=1, pending=2), V.RUN, id="one_done-early-failure"),
        pytest.param(TR.ONE_DONE, _c(uf=1, sk=1), V.SKIP, id="one_done-uf-does-not-count"),
        pytest.param(TR.ONE_DONE, _c(sk=1, pending=1), V.WAIT, id="one_done-waits"),
        pytest.param(TR.NONE_FAILED, _c(sk=2), V.RUN, id="none_failed-all-skipped-runs"),
        pytest.param(
            TR.NONE_FAILED, _c(f=1, pending=1), V.UPSTREAM_FAILED, id="none_failed-fails-early"
        ),
        pytest.param(TR.NONE_FAILED_MIN_ONE_SUCCESS, _c(sk=2), V.SKIP, id="nfmos-all-skipped"),
        pytest.param(TR.NONE_FAILED_MIN_ONE_SUCCESS, _c(s=1, sk=1), V.RUN, id="nfmos-branch-join"),
        pytest.param(TR.NONE_FAILED_MIN_ONE_SUCCESS, _c(sk=1, pending=1), V.WAIT, id="nfmos-waits"),
        pytest.param(
            TR.NONE_FAILED_MIN_ONE_SUCCESS,
            _c(uf=1, pending=1),
            V.UPSTREAM_FAILED,
            id="nfmos-fails-early",
        ),
        pytest.param(TR.NONE_SKIPPED, _c(s=1, f=1, uf=1), V.RUN, id="none_skipped-no-skip"),
        pytest.param(TR.NONE_SKIPPED, _c(sk=1, pending=2), V.SKIP, id="none_skipped-skips-early"),
        pytest.param(TR.ALWAYS, _c(pending=3), V.RUN, id="always-before-upstream-finish"),
        pytest.param(TR.ALWAYS, _c(f=2, sk=1), V.RUN, id="always-after-failures"),
    ],
)
def test_named_behaviour(rule: TriggerRule, counts: UpstreamCounts, expected: Verdict) -> None:
    assert decide(rule, counts) is expected


@pytest.mark.parametrize("rule", list(TR), ids=str)
def test_root_task_always_runs(rule: TriggerRule) -> None:
    assert decide(rule, UpstreamCounts(total=0)) is V.RUN


# --- properties the scheduler relies on, for larger fan-in ------------------------

_outcome_lists = st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=40)


@given(rule=st.sampled_from(list(TR)), up=_outcome_lists)
def test_matches_reference_for_large_fan_in(rule: TriggerRule, up: list[str]) -> None:
    assert decide(rule, _counts(tuple(up))) is REFERENCE[rule](tuple(up))


@given(
    rule=st.sampled_from(list(TR)),
    up=st.lists(st.sampled_from(OUTCOMES[:-1]), min_size=1, max_size=40),
)
def test_never_waits_once_all_upstream_done(rule: TriggerRule, up: list[str]) -> None:
    """No task is left pending behind finished upstream tasks (no deadlock)."""
    assert decide(rule, _counts(tuple(up))) is not V.WAIT


@given(
    rule=st.sampled_from(list(TR)),
    up=_outcome_lists,
    later=st.lists(st.sampled_from(OUTCOMES[:-1]), min_size=40, max_size=40),
)
def test_a_verdict_never_returns_to_wait(
    rule: TriggerRule, up: list[str], later: list[str]
) -> None:
    """Finishing more upstream tasks after a verdict never makes it WAIT again."""
    if decide(rule, _counts(tuple(up))) is V.WAIT:
        return
    fill = iter(later)
    more = tuple(next(fill) if o == "pending" else o for o in up)
    assert decide(rule, _counts(more)) is not V.WAIT


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"total": -1}, id="negative-total"),
        pytest.param({"total": 1, "skipped": -1}, id="negative-count"),
        pytest.param({"total": 1, "success": 1, "failed": 1}, id="more-done-than-total"),
    ],
)
def test_inconsistent_counts_raise(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="upstream"):
        UpstreamCounts(**kwargs)


def test_done_sums_final_outcomes() -> None:
    assert UpstreamCounts(total=5, success=1, failed=1, upstream_failed=1, skipped=1).done == 4
