"""Lease arithmetic (``engine.lease``): live or expired, who may take a run, what it reads as.

Table-driven, with a fake clock: every time is a number handed in.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stageflow.engine.lease import (
    DEFAULT_LEASE_SECONDS,
    Holder,
    LeaseTerms,
    Verdict,
    clock_text,
    decide,
    describe_holder,
    is_live,
    silence,
)

T0 = datetime(2026, 11, 25, 12, 1, 7, tzinfo=UTC).timestamp()  # 12:01:07 UTC


def held(
    state: str = "running",
    owner: str | None = "w1:41",
    epoch: int = 3,
    expires_at: float | None = T0 + 15,
    renewed_at: float | None = T0,
) -> Holder:
    return Holder(state, owner, epoch, expires_at, renewed_at)


def test_default_terms_renew_every_five_seconds_of_fifteen() -> None:
    terms = LeaseTerms()
    assert (terms.seconds, terms.renew_every) == (DEFAULT_LEASE_SECONDS, 5.0) == (15.0, 5.0)
    assert terms.expiry(T0) == T0 + 15
    assert LeaseTerms(3.0).renew_every == 1.0


@pytest.mark.parametrize(
    ("expires_at", "now", "live"),
    [
        pytest.param(None, T0, False, id="no-lease"),
        pytest.param(T0 + 15, T0, True, id="fresh"),
        pytest.param(T0 + 15, T0 + 14.999, True, id="just-before-expiry"),
        pytest.param(T0 + 15, T0 + 15, False, id="at-expiry"),
        pytest.param(T0 + 15, T0 + 600, False, id="long-expired"),
    ],
)
def test_is_live(expires_at: float | None, now: float, live: bool) -> None:
    assert is_live(expires_at, now) is live


@pytest.mark.parametrize(
    ("holder", "claimer", "now", "owner_dead", "verdict"),
    [
        pytest.param(held(owner=None, expires_at=None), "w2:7", T0, False, "free", id="never"),
        pytest.param(held(state="queued", owner=None), "w2:7", T0, False, "free", id="queued"),
        pytest.param(held(state="success", expires_at=None), "w2:7", T0, False, "free", id="ended"),
        pytest.param(held(state="failed"), "w2:7", T0, False, "free", id="failed-retry"),
        pytest.param(held(state="cancelled"), "w2:7", T0 + 1, False, "free", id="cancelled"),
        pytest.param(held(expires_at=None), "w2:7", T0, False, "free", id="cleared"),
        pytest.param(held(), "w1:41", T0 + 1, False, "mine", id="own-lease"),
        pytest.param(held(), "w2:7", T0 + 1, False, "held", id="live"),
        pytest.param(held(state="paused"), "w2:7", T0 + 1, False, "held", id="paused-live"),
        pytest.param(held(), "w2:7", T0 + 14.9, False, "held", id="live-until-expiry"),
        pytest.param(held(), "w2:7", T0 + 15, False, "expired", id="at-expiry"),
        pytest.param(held(), "w2:7", T0 + 40, False, "expired", id="expired"),
        pytest.param(held(state="queued"), "w2:7", T0 + 40, False, "expired", id="queued-exp"),
        pytest.param(held(), "w2:7", T0 + 1, True, "owner_dead", id="dead-owner-fast-path"),
        pytest.param(held(), "w2:7", T0 + 40, True, "owner_dead", id="dead-and-expired"),
        pytest.param(held(state="success"), "w2:7", T0, True, "free", id="ended-dead-owner"),
    ],
)
def test_decide(holder: Holder, claimer: str, now: float, owner_dead: bool, verdict: str) -> None:
    got = decide(holder, claimer, now, owner_dead=owner_dead)
    assert got == Verdict(verdict)
    assert got.may_take is (verdict != "held")


def test_a_lease_renewed_in_time_is_never_taken_over() -> None:
    """An owner renewing every ``renew_every`` keeps the run: at no instant between
    renewals may another claimer take it; one renewal missed is not enough either."""
    terms = LeaseTerms()
    renewed = T0
    now = T0
    while now < T0 + 60:
        holder = held(expires_at=terms.expiry(renewed), renewed_at=renewed)
        assert decide(holder, "w2:7", now) is Verdict.HELD
        now += 0.5
        if now - renewed >= 2 * terms.renew_every:  # one renewal is late: still held
            renewed = now
    silent = held(expires_at=terms.expiry(renewed), renewed_at=renewed)
    assert decide(silent, "w2:7", renewed + terms.seconds) is Verdict.EXPIRED


@pytest.mark.parametrize(
    ("holder", "now", "text"),
    [
        pytest.param(
            held(),
            T0 + 30,
            "w1:41 silent since 12:01:07 UTC, will be taken over",
            id="expired",
        ),
        pytest.param(
            held(renewed_at=None),
            T0 + 30,
            "w1:41's lease expired at 12:01:22 UTC, will be taken over",
            id="no-heartbeat",
        ),
        pytest.param(
            held(),
            T0 + 86_400,
            "w1:41 silent since 2026-11-25 12:01:07 UTC, will be taken over",
            id="another-day",
        ),
        pytest.param(held(), T0 + 5, None, id="live"),
        pytest.param(held(state="success"), T0 + 30, None, id="ended"),
        pytest.param(held(owner=None, expires_at=None), T0 + 30, None, id="never-claimed"),
        pytest.param(held(expires_at=None), T0 + 30, None, id="cleared"),
    ],
)
def test_silence(holder: Holder, now: float, text: str | None) -> None:
    assert silence(holder, now) == text


@pytest.mark.parametrize(
    ("holder", "now", "text"),
    [
        pytest.param(
            held(), T0 + 2, "w1:41 (lease epoch 3, renewed 2s ago, expires in 13s)", id="live"
        ),
        pytest.param(
            held(), T0 + 20, "w1:41 (lease epoch 3, renewed 20s ago, expired 5s ago)", id="expired"
        ),
        pytest.param(
            held(owner=None, expires_at=None, renewed_at=None, epoch=0),
            T0,
            "nobody (lease epoch 0)",
            id="none",
        ),
    ],
)
def test_describe_holder(holder: Holder, now: float, text: str) -> None:
    assert describe_holder(holder, now) == text


def test_clock_text_adds_the_date_on_another_day() -> None:
    assert clock_text(T0, T0 + 60) == "12:01:07 UTC"
    assert clock_text(T0, T0 + 12 * 3600) == "2026-11-25 12:01:07 UTC"
