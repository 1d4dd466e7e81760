"""``STAGEFLOW_LEASE_SECONDS``: a finite number of seconds from 2 to 3600 (0 or empty:
the default); the lease terms a run uses follow it."""

from __future__ import annotations

import pytest

from stageflow.errors import UsageError
from stageflow.runtime.claim import lease_terms
from stageflow.runtime.settings import load_settings


@pytest.mark.parametrize(
    ("raw", "seconds", "renew_every"),
    [
        pytest.param("", 15.0, 5.0, id="default"),
        pytest.param("0", 15.0, 5.0, id="zero-is-default"),
        pytest.param("2", 2.0, 2 / 3, id="shortest"),
        pytest.param("30", 30.0, 10.0, id="longer"),
        pytest.param("3600", 3600.0, 1200.0, id="longest"),
    ],
)
def test_lease_seconds_set_the_lease_terms(raw: str, seconds: float, renew_every: float) -> None:
    terms = lease_terms(load_settings({"STAGEFLOW_LEASE_SECONDS": raw}))
    assert (terms.seconds, terms.renew_every) == pytest.approx((seconds, renew_every))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param("1.5", "it must be at least 2", id="too-short"),
        pytest.param("3601", "it must be at most 3,600", id="too-long"),
        pytest.param("nan", "it must be a finite number", id="nan"),
        pytest.param("inf", "it must be a finite number", id="inf"),
        pytest.param("-5", "it must not be negative", id="negative"),
        pytest.param("soon", "it must be a number", id="text"),
    ],
)
def test_a_bad_lease_length_is_refused_naming_the_variable(raw: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        load_settings({"STAGEFLOW_LEASE_SECONDS": raw})
    assert str(info.value).startswith(f"STAGEFLOW_LEASE_SECONDS is {raw!r}; {why}")
