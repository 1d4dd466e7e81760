"""Circuit breakers: fail fast while a shared resource keeps failing.

Policy (per circuit name, across runs and processes; the store keeps the state):

* ``closed``: attempts run. Each failed attempt adds one to ``failures``, a
  success resets it; at ``failure_threshold`` consecutive failures the circuit
  opens until ``now + reset_timeout_seconds``.
* ``open``: attempts fail at once without running ("circuit 'NAME' is open
  until <time>"). When the time has come, the next attempt is admitted as the
  one trial and the circuit is ``half_open``.
* ``half_open``: other attempts fail fast while the trial runs. Its success
  closes the circuit, its failure opens it again for another timeout. A trial
  whose result never comes (its run was cancelled or crashed) is given up
  after one timeout, and the next attempt becomes the trial.

Results of attempts admitted before the circuit opened change nothing while it
is open (the timeout decides). These are pure functions of the state and the
time handed in; the runtime reads and writes the state in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

__all__ = ["CircuitState", "admit", "open_message", "record_result"]

CircuitPhase = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class CircuitState:
    """One circuit's state; ``opened_until``: while open, when a trial may start;
    ``trial_started``: while half-open, when the trial attempt was admitted."""

    name: str
    state: CircuitPhase = "closed"
    failures: int = 0
    opened_until: float | None = None
    trial_started: float | None = None
    updated_at: float = 0.0


def admit(
    current: CircuitState | None, name: str, now: float, reset_timeout: float
) -> tuple[bool, CircuitState]:
    """Whether an attempt may run now, and the circuit's state after deciding."""
    state = current or CircuitState(name, updated_at=now)
    if state.state == "closed":
        return True, state
    if state.state == "open" and state.opened_until is not None and now < state.opened_until:
        return False, state
    trial = state.trial_started
    if state.state == "half_open" and trial is not None and now < trial + reset_timeout:
        return False, state
    # open and the time has come, or a half-open trial given up: this one is the trial
    return True, replace(state, state="half_open", trial_started=now, updated_at=now)


def record_result(
    current: CircuitState | None,
    name: str,
    ok: bool,
    now: float,
    failure_threshold: int,
    reset_timeout: float,
) -> CircuitState:
    """The circuit's state after an admitted attempt ended (``ok``: it succeeded)."""
    state = current or CircuitState(name, updated_at=now)
    if state.state == "open":
        return state
    if ok:
        return CircuitState(name, "closed", 0, None, None, now)
    failures = state.failures + 1
    if state.state == "half_open" or failures >= failure_threshold:
        return CircuitState(name, "open", failures, now + reset_timeout, None, now)
    return replace(state, failures=failures, updated_at=now)


def open_message(state: CircuitState, reset_timeout: float) -> str:
    """Why an attempt was refused: names the circuit and when it may be tried again."""
    if state.state == "half_open" and state.trial_started is not None:
        until = state.trial_started + reset_timeout
        extra = " (a trial attempt is running)"
    else:
        until = state.opened_until or 0.0
        extra = f" after {state.failures} consecutive failures"
    stamp = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
    return f"circuit '{state.name}' is open until {stamp}{extra}; the attempt did not run"
