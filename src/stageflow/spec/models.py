"""The canonical pipeline model: ``Pipeline``, ``Task`` and their policies.

There is one model (pydantic v2). YAML/JSON files, the seed documents' shapes
(``spec.aliases``) and the Python SDK (``@task``, ``Task(...)``) all end here.
Fields a task leaves ``None`` take the pipeline's ``defaults`` when the run is
planned (``resolved_*`` helpers), so a spec states only what differs.

This module is pure data: it never imports the runtime. ``Pipeline.run`` is the
SDK's one facade and imports the runtime lazily, inside the method.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, NewType

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from stageflow.spec.messages import shown_value

if TYPE_CHECKING:
    from stageflow.runtime.result import RunResult

__all__ = [
    "HOOKS",
    "PRIORITY_NAMES",
    "Approval",
    "Channel",
    "CircuitBreaker",
    "ExceptionName",
    "FailureStrategy",
    "Fallback",
    "Pipeline",
    "Resources",
    "RetryPolicy",
    "RunRetries",
    "ScheduleEntry",
    "Task",
    "TaskDefaults",
    "TaskId",
    "TriggerRule",
    "callable_ref",
    "input_source",
]

TaskId = NewType("TaskId", str)

_METRIC_SOURCE = re.compile(r"(.+?)\.metrics(?:\.(.+))?")


def input_source(source: str) -> tuple[str, str | None]:
    """The task an ``inputs`` source reads, and the metric it names: ``"train"`` ->
    ``("train", None)`` (its output); ``"check.metrics.drifted_columns"`` -> ``("check",
    "drifted_columns")``; ``"check.metrics"`` -> ``("check", "")`` (every metric)."""
    match = _METRIC_SOURCE.fullmatch(source)
    if match is None:
        return source, None
    return match.group(1), match.group(2) or ""


class TriggerRule(enum.StrEnum):
    """When a task may run, given its upstream outcomes (Airflow's meanings)."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"
    ALL_SKIPPED = "all_skipped"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"


FailureStrategy = Literal["fail_fast", "continue"]
ExecutionMode = Literal["sequential", "parallel", "hybrid"]
_BUILTIN_RESOURCES = ("cpu", "memory_gb", "gpu", "disk_gb")
_RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ResourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
_Amount = Annotated[float, Field(ge=0.0, le=1e12, strict=True)]  # strict: no bools, no "3"
_SEED_RESOURCE_SPELLINGS = frozenset({"cpu_cores", "gpu_count", "memory_mb", "timeout_seconds"})
_PoolName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

#: Seed 000's named priorities; an int is accepted as is (higher runs first).
PRIORITY_NAMES: Mapping[str, int] = {"low": -10, "normal": 0, "high": 10, "critical": 100}

_STRICT = ConfigDict(extra="forbid", populate_by_name=True)


#: An exception class named in ``retry_on``/``fatal_on``: ``ValueError`` or
#: ``package.module.ClassName``; it matches any class in the raised exception's MRO.
ExceptionName = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", max_length=300
    ),
]

Backoff = Literal["none", "fixed", "linear", "exponential"]


class RetryPolicy(BaseModel):
    """How often and how soon a failed attempt is tried again (``engine.retry``).

    ``backoff`` (the strategy): ``none`` (never retried), ``fixed``, ``linear``
    or ``exponential``, capped at ``max_delay_seconds``; ``jitter`` (0..1, ``true``
    is 1) takes up to that fraction off each delay, deterministically per task
    and attempt. ``retry_on``: only errors of these classes are retried.
    """

    model_config = _STRICT

    max_retries: int = Field(default=0, ge=0, le=1000)
    delay_seconds: float = Field(default=0.0, ge=0.0, le=7 * 24 * 3600)
    backoff: Backoff = "fixed"
    max_delay_seconds: float = Field(default=3600.0, ge=0.0)
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)
    retry_on: list[ExceptionName] | None = None

    @field_validator("jitter", mode="before")
    @classmethod
    def _jitter_flag(cls, value: object) -> object:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        return value


class CircuitBreaker(BaseModel):
    """Fail fast after ``failure_threshold`` consecutive failures of the tasks sharing
    ``name`` (across runs), for ``reset_timeout_seconds``; then one trial attempt.

    ``name`` defaults to the task's operator (``module:function`` for Python tasks).
    """

    model_config = _STRICT

    name: str | None = Field(default=None, min_length=1, max_length=200)
    failure_threshold: int = Field(default=5, ge=1, le=1_000_000)
    reset_timeout_seconds: float = Field(default=60.0, gt=0.0, le=365 * 24 * 3600)


class Fallback(BaseModel):
    """What a task that finally failed returns instead: a ``value`` (any JSON), or the
    output of ``call`` (``package.module:function``, bound like the task's function,
    plus ``error``: the last error's text). Neither given: the value ``null``."""

    model_config = _STRICT

    value: Any = None
    call: str | None = Field(default=None, max_length=500)


_ApproverName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Approval(BaseModel):
    """A manual gate: the task waits in ``awaiting_approval`` until someone decides
    (``stageflow approve RUN_ID TASK [--reject]``). Rejected, or no decision within
    ``timeout_seconds`` (``None``: wait for ever): the task fails. ``approvers``:
    only these names may decide (``None``: anyone). A task's ``approval: true`` is
    ``Approval()``; ``approval: false`` is no gate."""

    model_config = _STRICT

    message: str = Field(default="", max_length=2000)
    timeout_seconds: float | None = Field(default=None, gt=0, le=365 * 24 * 3600)
    approvers: list[_ApproverName] | None = Field(default=None, min_length=1)


class Resources(BaseModel):
    """What one attempt asks of the machine (seed spellings are mapped in ``aliases``).

    ``cpu`` (default 1 once ``resources:`` is given), ``memory_gb``, ``gpu`` (a
    fraction below 1 shares a device) and ``disk_gb``; any other key is a custom
    resource (``licenses: 1``, kept under ``custom``) that must be configured with
    a capacity. A task that declares no ``resources:`` asks for nothing but a
    worker slot. A key that looks like a misspelt built-in or a seed spelling
    left over is not taken as custom: validation names it.
    """

    model_config = _STRICT

    cpu: float = Field(default=1.0, ge=0.0, le=4096)
    memory_gb: float = Field(default=0.0, ge=0.0, le=1 << 20)
    gpu: float = Field(default=0.0, ge=0.0, le=1024)
    disk_gb: float = Field(default=0.0, ge=0.0, le=1 << 30)
    custom: dict[_ResourceName, _Amount] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_custom(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from stageflow.spec.suggest import did_you_mean

        custom = {
            k: v
            for k, v in data.items()
            if isinstance(k, str)
            and k not in cls.model_fields
            and k not in _SEED_RESOURCE_SPELLINGS
            and _RESOURCE_NAME.fullmatch(k)
            and did_you_mean(k, _BUILTIN_RESOURCES) is None
        }
        if not custom:
            return data
        given = data.get("custom")
        rest = {k: v for k, v in data.items() if k not in custom}
        rest["custom"] = {**custom, **given} if isinstance(given, dict) else custom
        return rest


class TaskDefaults(BaseModel):
    """Values applied to every task that does not set its own."""

    model_config = _STRICT

    retry: RetryPolicy | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    resources: Resources | None = None
    pool: _PoolName | None = None
    enforce_limits: bool | None = None
    priority: int | None = None
    trigger_rule: TriggerRule | None = None
    fatal_on: list[ExceptionName] | None = None
    circuit_breaker: CircuitBreaker | None = None
    cache: bool | None = None
    cache_ttl_seconds: float | None = Field(default=None, gt=0)
    cache_version: str | None = Field(default=None, max_length=200)

    @field_validator("priority", mode="before")
    @classmethod
    def _named_priority(cls, value: object) -> object:
        return _priority(value)


class Task(BaseModel):
    """One node of the DAG: what runs, after what, with which policies.

    SDK form: ``Task("train", fn, upstream=["features"])``; the function's
    parameters named after upstream tasks receive their outputs. ``inputs`` binds
    an upstream output to any parameter name instead, ``Task("t1", inc,
    inputs={"x": "t0"})`` (as Kedro's ``node(inputs=...)``): each source becomes
    a data upstream of the task, so one function can serve many tasks.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    id: str
    name: str | None = None
    description: str | None = None
    operator: str | None = None
    call: str | None = None
    fn: Callable[..., Any] | None = Field(default=None, exclude=True, repr=False)
    upstream: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    inputs: dict[str, str] = Field(default_factory=dict)  # parameter -> upstream task id
    parameters: dict[str, Any] = Field(default_factory=dict)
    resources: Resources | None = None
    pool: _PoolName | None = None  # a named pool with slots (like Airflow pools)
    exclusive: bool = False  # execution_mode hybrid: runs alone
    estimated_seconds: float | None = Field(default=None, gt=0)  # for critical-path order
    enforce_limits: bool | None = None  # memory_gb becomes a hard limit
    retry: RetryPolicy | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    priority: int | None = None
    trigger_rule: TriggerRule | None = None
    when: str | None = Field(default=None, max_length=2000)
    branch: bool = False
    group: str | None = None  # set by template expansion (``use:``): the group's id
    map_over: str | None = None  # run once per element of this upstream's output
    min_success_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    fatal_on: list[ExceptionName] | None = None
    circuit_breaker: CircuitBreaker | None = None
    fallback: Fallback | None = None
    cache: bool | None = None
    cache_ttl_seconds: float | None = Field(default=None, gt=0)
    cache_version: str | None = Field(default=None, max_length=200)
    approval: Approval | None = None
    deadline: Deadline | None = None  # an alert while it runs past it (engine.alerts)

    def __init__(
        self, id: str | None = None, fn: Callable[..., Any] | None = None, /, **data: Any
    ) -> None:
        if id is not None:
            data["id"] = id
        if fn is not None:
            data["fn"] = fn
        if _plain_task(data):
            # Generated graphs build 100,000s of these: when the arguments are
            # exactly what validation would accept, skip pydantic's machinery.
            fields = {**_TASK_FIELD_DEFAULTS, **data}
            fields["upstream"] = list(fields["upstream"])
            fields["after"] = list(fields["after"])
            fields["parameters"] = {}
            fields["inputs"] = {}
            object.__setattr__(self, "__dict__", fields)
            object.__setattr__(self, "__pydantic_fields_set__", set(data))
            object.__setattr__(self, "__pydantic_extra__", None)
            object.__setattr__(self, "__pydantic_private__", None)
            return
        super().__init__(**data)

    @field_validator("priority", mode="before")
    @classmethod
    def _named_priority(cls, value: object) -> object:
        return _priority(value)

    @field_validator("approval", mode="before")
    @classmethod
    def _approval_flag(cls, value: object) -> object:
        """``true``: a gate with the defaults; ``false``: none; nothing else but a mapping."""
        if value is True:
            return Approval()
        if value is False:
            return None
        if value is None or isinstance(value, Approval | Mapping):
            return value
        raise ValueError(
            "approval is `true` (a gate anyone may decide, with no time limit) or a mapping: "
            "`approval: {message: ..., approvers: [...], timeout_seconds: ...}`, each key "
            f"optional; got {shown_value(value)}"
        )

    @model_validator(mode="after")
    def _inputs_are_upstream(self) -> Task:
        """Each ``inputs`` source's task is a data upstream (added once, after ``upstream``)."""
        sources = (input_source(u)[0] for u in self.inputs.values())
        missing = [u for u in dict.fromkeys(sources) if u not in self.upstream]
        if missing:
            self.upstream = [*self.upstream, *missing]
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly (handy in unit tests of user code)."""
        if self.fn is None:
            raise TypeError(f"task '{self.id}' wraps no Python function")
        return self.fn(*args, **kwargs)

    def map(self, over: str | Task, *, min_success_ratio: float | None = None) -> Task:
        """A copy of this task that runs once per element of ``over``'s output (a list);
        downstream receives the list of outputs in order. ``min_success_ratio``: the
        share of elements that must succeed (default all)."""
        source = over.id if isinstance(over, Task) else over
        upstream = self.upstream if source in self.upstream else [*self.upstream, source]
        return self.model_copy(
            update={
                "map_over": source,
                "min_success_ratio": min_success_ratio,
                "upstream": upstream,
            }
        )

    @property
    def all_upstream(self) -> list[str]:
        """Data upstream then ordering-only upstream, without repeats."""
        if not self.after:
            return self.upstream
        seen = dict.fromkeys(self.upstream)
        seen.update(dict.fromkeys(self.after))
        return list(seen)

    @property
    def operator_name(self) -> str:
        """The operator that runs this task (``python`` for a function or ``call:``)."""
        if self.operator is not None:
            return self.operator
        return "python"


class ScheduleEntry(BaseModel):
    """A schedule in a spec (``schedules:``): exactly one of ``cron`` (read in
    ``timezone``), ``every`` (seconds, or ``90s``/``10m``/``2h``/``1d``), ``at`` (an
    ISO-8601 time: once), ``event`` (an event's name: it fires on each
    ``POST /api/v1/events/<event>``) and ``after`` (a pipeline's name: it fires when a run
    of it ends in one of ``after_states``); ``start``/``end`` bound it; ``catchup`` fires
    the ticks it missed; ``params`` and ``priority`` go to its runs; at most
    ``max_active_runs`` unfinished at once. ``stageflow schedules apply FILE`` (or saving
    the pipeline over the API) registers it under ``name`` (default: the pipeline's name,
    then ``-2``, ``-3``...). The fields are checked by ``runtime.plan`` (``engine.schedules``)."""

    model_config = _STRICT

    name: str | None = Field(default=None, min_length=1, max_length=100)
    cron: str | None = Field(default=None, max_length=200)
    every: str | float | None = None
    at: str | None = Field(default=None, max_length=64)
    timezone: str = Field(default="UTC", max_length=64)
    start: str | None = Field(default=None, max_length=64)
    end: str | None = Field(default=None, max_length=64)
    catchup: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    max_active_runs: int | None = Field(default=None, ge=1, le=100_000)
    enabled: bool = True
    event: str | None = Field(default=None, max_length=100)
    # Kind after: when a run of pipeline ``after`` ends in one of ``after_states``
    # (``None``: ``["success"]``; ``failed`` and ``cancelled`` too).
    after: str | None = Field(default=None, max_length=128)
    after_states: list[str] | None = Field(default=None, max_length=3)
    # For the runs it fires (``engine.run_retry``): a run-level retry policy that wins
    # over the pipeline's ``run_retries``, and an execution timeout (``2h``).
    run_retries: int | None = None
    retry_strategy: str | None = Field(default=None, max_length=32)
    retry_delay: str | float | None = None
    execution_timeout: str | float | None = None
    # Kind object: an fsspec URL with a glob (``file:///data/in/*.csv``); each object
    # that appears under it fires one run, the URL listed every ``poll`` (default 30s).
    object: str | None = Field(default=None, max_length=1000)
    poll: str | float | None = None


class RunRetries(BaseModel):
    """A run-level retry policy (``engine.run_retry``): a run that ends ``failed`` is
    queued again as a new run, at most ``max_retries`` times, ``retry_delay`` seconds
    (or ``30s``, ``10m``) after it ended, by ``strategy``: ``fixed``, ``linear``
    (delay times the attempt), ``exponential`` (doubling) or ``none``."""

    model_config = _STRICT

    strategy: Backoff = "fixed"
    max_retries: int = Field(default=0, ge=0, le=100)
    retry_delay: float = Field(default=0.0, ge=0.0, le=7 * 24 * 3600)

    @field_validator("retry_delay", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            from stageflow.spec.times import parse_duration

            try:
                return parse_duration(value, "run_retries.retry_delay")
            except Exception as exc:  # pydantic reports it as the field's error
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _doubles_something(self) -> RunRetries:
        if self.strategy == "exponential" and self.retry_delay == 0:
            raise ValueError(
                "run_retries.retry_delay is 0 with the exponential strategy, which would "
                "double nothing; give a positive delay (30s) or use strategy fixed"
            )
        return self


#: The pipeline hooks (``Pipeline.on_failure`` ...): when each notifies its channels.
HOOKS = ("on_failure", "on_success", "on_retry")
_SECRET_ONLY = re.compile(r"\$\{secret:[A-Za-z_][A-Za-z0-9_]*\}")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")


class Channel(BaseModel):
    """Where a notification goes (``runtime.notify``): exactly one of ``webhook`` (an
    http(s) URL: a Slack-compatible JSON post), ``email`` (addresses, sent over SMTP;
    ``subject`` replaces the message's) or ``command`` (an argv run without a shell,
    the message as JSON on its stdin). A URL or an address may be a
    ``${secret:NAME}`` reference: it is resolved only when the message is sent. One
    shape for pipeline hooks and alert rules."""

    model_config = _STRICT

    webhook: str | None = Field(default=None, min_length=1, max_length=2000)
    email: list[str] | None = Field(default=None, min_length=1, max_length=100)
    subject: str | None = Field(default=None, min_length=1, max_length=200)
    command: list[str] | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str) -> str:
        if _SECRET_ONLY.fullmatch(value) or (
            value.startswith(("http://", "https://")) and not any(c.isspace() for c in value)
        ):
            return value
        raise ValueError(
            "must be an http:// or https:// URL, or ${secret:NAME} holding one, got "
            f"{shown_value(value[:8] + '...' if len(value) > 8 else value)}"
        )

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> Any:
        listed = [value] if isinstance(value, str) else value
        if isinstance(listed, list):
            for address in listed:
                if isinstance(address, str) and not (
                    _ADDRESS.fullmatch(address) or _SECRET_ONLY.fullmatch(address)
                ):
                    raise ValueError(
                        f"{shown_value(address)} is not an e-mail address (name@host) "
                        "or ${secret:NAME}"
                    )
        return listed

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the program (the first item) must not be empty")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Channel:
        given = [k for k in ("webhook", "email", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            what = " and ".join(given) if given else "none"
            raise ValueError(
                f"a channel is exactly one of webhook, email or command; {what} given "
                "(e.g. {webhook: https://hooks.example.com/...})"
            )
        if self.subject is not None and self.email is None:
            raise ValueError("subject is for an email channel only; remove it")
        return self

    @property
    def kind(self) -> str:
        """``webhook``, ``email`` or ``command``."""
        if self.webhook is not None:
            return "webhook"
        return "email" if self.email is not None else "command"


class Deadline(BaseModel):
    """When a run (``deadline:`` on the pipeline) or a task run (on a task) should have
    ended: exactly one of ``after_seconds`` after it started, or ``at`` a time of day
    ``"HH:MM"`` (read in ``timezone``: the first at or after the start) or an ISO instant
    with an offset. Past it, an alert fires while the run is still going, once
    (``runtime.alerting``), to ``channels`` too. Checked by ``engine.alerts``."""

    model_config = _STRICT

    after_seconds: float | None = None
    at: str | None = Field(default=None, max_length=64)
    timezone: str = Field(default="UTC", max_length=64)
    severity: str = "warning"
    channels: list[Channel] = Field(default_factory=list, max_length=20)


class AlertRuleSpec(BaseModel):
    """An alert rule in a spec (``alerts:``; seed 003's ``AlertRule``): it watches
    ``metric`` of the pipeline (or of its ``task``) and opens an alert of ``severity``
    when ``condition`` holds against ``threshold`` (``below_baseline``: below the mean
    of the last ``runs`` values minus ``k`` standard deviations), at most once per
    ``cooldown`` seconds; ``window`` bounds the runs a rate or count reads. Saving the
    pipeline registers it as ``<pipeline>.<id>``. Checked by ``engine.alerts``."""

    model_config = _STRICT

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    metric: str = Field(max_length=200)
    condition: str = "greater_than"
    threshold: float | str | None = None
    severity: str = "warning"
    cooldown: float = 300.0
    enabled: bool = True
    description: str = Field(default="", max_length=2000)
    task: str | None = Field(default=None, max_length=128)
    window: float | str = 3600.0
    k: float = 2.0
    runs: int = 10
    channels: list[Channel] = Field(default_factory=list, max_length=20)


class Pipeline(BaseModel):
    """A named DAG of tasks with run parameters and task defaults."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    title: str | None = Field(default=None, max_length=200)  # a display name (seed 002)
    description: str | None = None
    owner: str | None = None
    version: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    defaults: TaskDefaults = Field(default_factory=TaskDefaults)
    max_parallel_tasks: int | None = Field(default=None, ge=1, le=100_000)
    failure_strategy: FailureStrategy = "continue"
    execution_mode: ExecutionMode = "parallel"
    run_timeout_seconds: float | None = Field(default=None, gt=0)
    # A whole failed run queued again (``engine.run_retry``); a schedule's policy wins.
    run_retries: RunRetries | None = None
    # When it runs by itself (``runtime.schedule_loop``): ``schedule`` is a cron
    # expression in UTC (seed 002's ``schedule: "0 2 * * *"``), ``schedules`` the full form.
    schedule: str | None = Field(default=None, max_length=200)
    schedules: list[ScheduleEntry] = Field(default_factory=list, max_length=100)
    # Alerting (``runtime.alerting``): an alert while a run goes past its deadline, and
    # rules registered with the pipeline when it is saved (``operations.alerts``).
    deadline: Deadline | None = None
    alerts: list[AlertRuleSpec] = Field(default_factory=list, max_length=100)
    tasks: list[Task] = Field(default_factory=list)
    # Hooks (``runtime.notify``): channels told when a run ends failed, ends success,
    # or a task attempt failed and will be retried.
    on_failure: list[Channel] = Field(default_factory=list, max_length=20)
    on_success: list[Channel] = Field(default_factory=list, max_length=20)
    on_retry: list[Channel] = Field(default_factory=list, max_length=20)
    _source: str | None = PrivateAttr(default=None)  # the file it was loaded from, if any
    # What the spec asks for that is accepted but not done (``spec.aliases.seed_notes``).
    _notes: list[str] = PrivateAttr(default_factory=list)

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        if name is not None:
            data["name"] = name
        super().__init__(**data)
        _infer_upstream_by_name(self.tasks)

    # -- resolved policies ---------------------------------------------------

    def retry_of(self, task: Task) -> RetryPolicy:
        return task.retry or self.defaults.retry or _NO_RETRY

    def timeout_of(self, task: Task) -> float | None:
        return (
            task.timeout_seconds
            if task.timeout_seconds is not None
            else (self.defaults.timeout_seconds)
        )

    def resources_of(self, task: Task) -> Resources | None:
        """The task's request (its own, else the pipeline default); ``None``: it
        declared none (it then takes a worker slot and no CPU/memory budget)."""
        return task.resources or self.defaults.resources

    def pool_of(self, task: Task) -> str | None:
        return task.pool if task.pool is not None else self.defaults.pool

    def enforce_limits_of(self, task: Task) -> bool:
        if task.enforce_limits is not None:
            return task.enforce_limits
        return bool(self.defaults.enforce_limits)

    def priority_of(self, task: Task) -> int:
        if task.priority is not None:
            return task.priority
        return self.defaults.priority or 0

    def trigger_rule_of(self, task: Task) -> TriggerRule:
        return task.trigger_rule or self.defaults.trigger_rule or TriggerRule.ALL_SUCCESS

    def fatal_on_of(self, task: Task) -> list[str]:
        found = task.fatal_on if task.fatal_on is not None else self.defaults.fatal_on
        return found or []

    def circuit_breaker_of(self, task: Task) -> tuple[str, CircuitBreaker] | None:
        """The task's circuit breaker and its name (the operator's when not given)."""
        breaker = task.circuit_breaker or self.defaults.circuit_breaker
        if breaker is None:
            return None
        if breaker.name is not None:
            return breaker.name, breaker
        if task.fn is not None:
            return callable_ref(task.fn), breaker
        return task.call or task.operator_name, breaker

    def cache_of(self, task: Task) -> bool:
        return bool(task.cache if task.cache is not None else self.defaults.cache)

    def cache_ttl_of(self, task: Task) -> float | None:
        if task.cache_ttl_seconds is not None:
            return task.cache_ttl_seconds
        return self.defaults.cache_ttl_seconds

    def cache_version_of(self, task: Task) -> str | None:
        if task.cache_version is not None:
            return task.cache_version
        return self.defaults.cache_version

    def upstream_map(self) -> dict[str, list[str]]:
        """Task id -> all upstream ids (data and ordering), in definition order."""
        return {t.id: t.all_upstream for t in self.tasks}

    # -- identity --------------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        """The spec as plain JSON data; SDK functions appear as ``call`` references."""
        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["name"] = self.name
        for raw, task in zip(data.get("tasks", []), self.tasks, strict=True):
            if task.fn is not None and "call" not in raw:
                raw["call"] = callable_ref(task.fn)
        return data

    def content_hash(self, canonical: dict[str, Any] | None = None) -> str:
        """A stable version id: sha256 of the canonical JSON (12 hex digits);
        ``canonical``: ``self.canonical()`` when the caller has it already."""
        return self.versioned_spec(canonical)[1]

    def versioned_spec(self, canonical: dict[str, Any] | None = None) -> tuple[str, str]:
        """The canonical JSON text (sorted keys, no spaces: what a store keeps) and its
        version id (``content_hash``), from one serialisation."""
        data = self.canonical() if canonical is None else canonical
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return text, hashlib.sha256(text.encode()).hexdigest()[:12]

    def schedule_entries(self) -> list[tuple[str, ScheduleEntry]]:
        """Its schedules with their names: ``schedule:`` as a cron entry named after the
        pipeline, then ``schedules:`` (unnamed ones: the pipeline's name, then ``-2``...)."""
        entries = ([ScheduleEntry(cron=self.schedule)] if self.schedule else []) + list(
            self.schedules
        )
        named: list[tuple[str, ScheduleEntry]] = []
        for k, entry in enumerate(entries):
            named.append((entry.name or (self.name if k == 0 else f"{self.name}-{k + 1}"), entry))
        return named

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def run(
        self,
        *,
        params: Mapping[str, Any] | None = None,
        executor: str = "thread",
        max_parallel: int | None = None,
        home: str | None = None,
        store_url: str | None = None,
        use_cache: bool = True,
    ) -> RunResult:
        """Validate and run this pipeline in-process; return the finished ``RunResult``.

        ``use_cache=False`` runs cached tasks anyway (``stageflow run --no-cache``).
        Raises ``InvalidSpec`` (every problem at once) before anything runs.
        """
        from stageflow.runtime.runner import run_pipeline  # the SDK facade, see module doc

        return run_pipeline(
            self,
            params=dict(params or {}),
            executor=executor,
            max_parallel=max_parallel,
            home=home,
            store_url=store_url,
            use_cache=use_cache,
        )


_NO_RETRY = RetryPolicy()
_TASK_FIELD_DEFAULTS: dict[str, Any] = {
    name: (
        info.default_factory()  # type: ignore[call-arg]  # our factories take no argument
        if info.default_factory is not None
        else info.default
    )
    for name, info in Task.model_fields.items()
}
_PLAIN_KEYS = frozenset({"id", "fn", "upstream", "after"})


def _plain_task(data: dict[str, Any]) -> bool:
    """True when ``data`` holds only an id, a function and lists of upstream ids."""
    if not _PLAIN_KEYS.issuperset(data) or type(data.get("id")) is not str:
        return False
    fn = data.get("fn")
    if fn is not None and not callable(fn):
        return False
    for key in ("upstream", "after"):
        value = data.get(key, ())
        if type(value) not in (list, tuple) or any(type(v) is not str for v in value):
            return False
    return True


def callable_ref(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, as written in a ``call:`` field."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return f"{module}:{qualname}"


def _priority(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in PRIORITY_NAMES:
        return PRIORITY_NAMES[value.strip().lower()]
    return value


def _infer_upstream_by_name(tasks: list[Task]) -> None:
    """Wire SDK tasks by parameter name: a parameter named like a task is its upstream
    (unless ``inputs`` binds that parameter to another task)."""
    ids: dict[str, str] | None = None
    signatures: dict[int, Mapping[str, inspect.Parameter]] = {}
    for task in tasks:
        if task.fn is None:
            continue
        if ids is None:
            ids = {t.id.replace("-", "_").replace(".", "_"): t.id for t in tasks}
        key = id(task.fn)
        names = signatures.get(key)
        if names is None:
            try:
                names = inspect.signature(task.fn).parameters
            except (TypeError, ValueError):  # builtins without a signature: nothing to infer
                names = {}
            signatures[key] = names
        if not names or all(n not in ids for n in names):
            continue
        extra = [
            ids[n]
            for n, p in names.items()
            if n in ids
            and ids[n] != task.id
            and ids[n] not in task.upstream
            and n not in task.inputs  # bound to another task's output explicitly
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if extra:
            task.upstream = [*task.upstream, *extra]
