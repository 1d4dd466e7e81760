"""The Python face of the monitor and alerts: ``PipelineMonitor``, ``AlertRule``,
``AlertCondition`` and ``AlertSeverity`` (seed 003's monitor API over the store's
samples, alert rules and alerts).

Policy. ``PipelineMonitor`` is an interface like the CLI: every method is one call of
``operations`` (``metrics_history``, ``current_metrics``, ``export_text``;
``operations.alerts``' ``add_rule``, ``remove_rule``, ``list_alerts``, ``ack_alert``,
``resolve_alert``) on a store opened for that call, and renders what it returns as
plain dicts (the API's JSON). It keeps nothing of its own: samples, rules and alerts
live in the store, so ``stageflow metrics``, ``stageflow alerts list`` and the API show
what a program recorded and added, and any ``stageflow worker``, ``scheduler`` or
``serve`` on the same store samples and evaluates the rules too (each sample is
written once per slot, each alert opened once, however many processes do it).
Mistakes raise the operations' exceptions with the CLI's words: ``UsageError`` (an
unknown metric, severity or format, a time that is not one, a range that ends before
it starts, a limit out of range, a move the alert's state has not), ``InvalidAlertRule``
(every problem of a rule: its metric, condition, threshold, severity, cooldown),
``AlertNotFound`` (an unknown rule or alert id).

``start_monitoring()`` makes this process sample and alert: the monitor's duty
(``runtime.monitor.MonitorDuty``: the host's, the store's and the running tasks'
gauges, once per ``sampling_interval_seconds``; samples past ``metrics_retention_hours``
pruned) and, with ``enable_alerting``, the alerting duty (``runtime.alerting.AlertDuty``:
deadlines every pass, the rules every ``sampling_interval_seconds``), on a thread of its
own with a store connection of its own, a pass every interval (at most a second apart,
so deadlines fire on time). A duty's failure is logged and the next pass goes on, as in
the schedule loop. It is idempotent; ``stop_monitoring()`` stops the thread and joins
it (idempotent too), and leaving ``with`` calls it.

Seed 003's names as stageflow spells them: ``rule_id`` is ``id``, ``metric_name`` is
``metric`` (a rule's metric is one of ``stageflow alerts metrics``: ``host.cpu_percent``,
``runs.failures``, ``run.duration_seconds``...; the samples are named alike:
``host.cpu_percent``, ``host.memory_percent``, ``runs.queued``... as ``stageflow metrics``
lists them), ``cooldown_minutes`` is ``cooldown`` in seconds, severities are ``info``,
``warning`` and ``critical`` (seed 003's ``high`` is ``critical``), ``start_monitoring``
takes no execution (it watches every run of the store), ``get_current_metrics()`` gives
the newest sample per host (``hosts[HOST]["host.cpu_percent"]``) and of the store, not
``resources``, and ``get_alerts(resolved=False)`` means open or acknowledged.

Times (``start_time``, ``end_time``): a ``datetime`` (UTC when naive), epoch seconds,
or text as the CLI's ``--from``/``--to`` take it (ISO 8601, ``now``, ``-1h``).

State: the settings (which store, the interval and retention), and while started the
thread and its stop event (guarded by a lock).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.errors import UsageError

if TYPE_CHECKING:
    from stageflow.operations.stores import Store
    from stageflow.runtime.duties import Duty
    from stageflow.runtime.orchestrator import Orchestrator
    from stageflow.runtime.settings import Settings

__all__ = ["AlertCondition", "AlertRule", "AlertSeverity", "PipelineMonitor"]

logger = logging.getLogger(__name__)

#: How long ``stop_monitoring`` waits for the thread's pass in progress to end.
_JOIN_SECONDS = 30.0
#: The longest wait between two passes: deadlines are checked at least this often.
_MAX_PASS_SECONDS = 1.0
#: The range of ``sampling_interval_seconds`` (a day at most).
_MAX_INTERVAL_SECONDS = 86_400.0

Time = datetime | float | int | str


class AlertCondition(Enum):
    """When a rule holds (``engine.alerts``); the values are ``--condition``'s."""

    GREATER_THAN = "greater_than"
    LESS_THAN = "less_than"
    EQUALS = "equals"
    CONTAINS = "contains"  # the metric's text contains the threshold's
    BELOW_BASELINE = "below_baseline"  # below mean - k*sigma of the last ``runs`` values


class AlertSeverity(Enum):
    """How bad an alert is; the values are ``--severity``'s (seed 003's ``high`` is
    ``CRITICAL``)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class AlertRule:
    """An alert rule to add: ``id`` (seed 003's ``rule_id``), the ``metric`` it watches
    (``stageflow alerts metrics``; seed 003's ``metric_name``), ``condition`` with
    ``threshold`` (a number; text for ``contains``), ``severity``, ``cooldown`` (seconds
    between two openings for one subject; seed 003's ``cooldown_minutes`` times 60),
    ``enabled`` and ``description``, as ``stageflow alerts rules add`` takes them.
    ``pipeline`` (a saved one) and ``task`` narrow what it watches (default: every
    pipeline); ``window`` (seconds or ``"1h"``) is how far back run metrics look; ``k``
    and ``runs`` are ``below_baseline``'s; ``channels`` (``{"webhook": URL}``,
    ``{"email": [...]}``, ...) are told when it opens and resolves."""

    id: str
    metric: str
    condition: AlertCondition | str = AlertCondition.GREATER_THAN
    threshold: float | str | None = None
    severity: AlertSeverity | str = AlertSeverity.WARNING
    cooldown: float = 300.0
    enabled: bool = True
    description: str = ""
    pipeline: str | None = None
    task: str | None = None
    window: float | str = 3600.0
    k: float = 2.0
    runs: int = 10
    channels: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


class PipelineMonitor:
    """Samples, reads and exports the monitor's metrics and manages alert rules and
    alerts from a program; see the module docstring. Give ``settings``, or ``home`` /
    ``store_url`` (as ``Orchestrator``), or seed 003's ``orchestrator`` (its store);
    ``sampling_interval_seconds`` and ``metrics_retention_hours`` default to the
    settings' (``STAGEFLOW_SAMPLING_INTERVAL_SECONDS``, 15;
    ``STAGEFLOW_METRICS_RETENTION_HOURS``, 168); ``enable_alerting``: whether
    ``start_monitoring`` evaluates deadlines and alert rules too."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        home: str | os.PathLike[str] | None = None,
        store_url: str | None = None,
        orchestrator: Orchestrator | None = None,
        sampling_interval_seconds: float | None = None,
        metrics_retention_hours: float | None = None,
        enable_alerting: bool = True,
    ) -> None:
        from stageflow.runtime.runner import resolve_settings

        if orchestrator is not None:
            if settings is not None or home is not None or store_url is not None:
                raise UsageError(
                    "give orchestrator= or settings=/home=/store_url=, not both: the "
                    "monitor uses the orchestrator's store",
                    field="orchestrator",
                )
            settings = orchestrator.settings
        resolved = resolve_settings(settings, home, store_url)
        interval = (
            resolved.sampling_interval_seconds
            if sampling_interval_seconds is None
            else sampling_interval_seconds
        )
        retention = (
            resolved.metrics_retention_hours
            if metrics_retention_hours is None
            else metrics_retention_hours
        )
        if not 0 < interval <= _MAX_INTERVAL_SECONDS:
            raise UsageError(
                f"sampling_interval_seconds is {interval}; give more than 0 and at most "
                f"{_MAX_INTERVAL_SECONDS:,.0f} (a day)",
                field="sampling_interval_seconds",
            )
        if not retention > 0:
            raise UsageError(
                f"metrics_retention_hours is {retention}; give more than 0 (168: a week)",
                field="metrics_retention_hours",
            )
        self.settings = replace(
            resolved, sampling_interval_seconds=interval, metrics_retention_hours=retention
        )
        self.enable_alerting = enable_alerting
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None

    @property
    def sampling_interval_seconds(self) -> float:
        return self.settings.sampling_interval_seconds

    @property
    def metrics_retention_hours(self) -> float:
        return self.settings.metrics_retention_hours

    # -- metrics ----------------------------------------------------------------------------

    def get_current_metrics(self) -> dict[str, Any]:
        """The newest sample of each metric, as ``stageflow metrics current --format
        json`` prints it: ``hosts`` (per host: ``host.cpu_percent``, ``host.memory_percent``...),
        ``store`` (``runs.queued``, ``runs.running``, ``workers.live``), running
        ``tasks``' samples, and ``sampled_at`` (``None``: nothing sampled lately)."""
        from stageflow import operations as ops

        with ops.reading(self.settings) as store:
            found = ops.current_metrics(store, time.time(), self.sampling_interval_seconds)
        return found.as_json()

    def get_metrics_history(
        self,
        metric_names: Sequence[str] = (),
        start_time: Time | None = None,
        end_time: Time | None = None,
    ) -> dict[str, Any]:
        """The samples of ``metric_names`` (every metric when empty) from ``start_time``
        (default: an hour before the end) to ``end_time`` (default: now), both included,
        as ``stageflow metrics history --format json`` prints them: ``names``, ``from``,
        ``to`` and ``samples`` (``name``, ``at``, ``timestamp``, ``host``, ``labels``,
        ``value``), oldest first. Raises ``UsageError`` (an unknown metric, a bad time or
        range)."""
        from stageflow import operations as ops

        names = _names_of(metric_names)
        since, until = self._range(start_time, end_time)
        with ops.reading(self.settings) as store:
            return ops.metrics_history(store, names, since, until).as_json()

    def export_metrics(
        self,
        output_path: str | os.PathLike[str] | None = None,
        format: str = "json",
        *,
        start_time: Time | None = None,
        end_time: Time | None = None,
        metric_names: Sequence[str] = (),
    ) -> str:
        """The samples of ``get_metrics_history`` as ``stageflow metrics export`` writes
        them: CSV with a header (``name, at, timestamp, host, labels, value``) or a JSON
        list of the same objects. Written to ``output_path`` when given; the text either
        way. Raises ``UsageError`` (a bad format, metric, time, or a file that cannot be
        written)."""
        from stageflow import operations as ops

        names = _names_of(metric_names)
        since, until = self._range(start_time, end_time)
        with ops.reading(self.settings) as store:
            found = ops.metrics_history(store, names, since, until)
        text = ops.export_text(found.samples, format)
        if output_path is not None:
            path = Path(output_path)
            try:
                path.write_text(text)
            except OSError as exc:
                raise UsageError(
                    f"output_path {path}: cannot write it ({exc.strerror}); name a file in "
                    "a folder that exists",
                    field="output_path",
                ) from None
        return text

    # -- alert rules and alerts -------------------------------------------------------------

    def add_alert_rule(self, rule: AlertRule) -> dict[str, Any]:
        """Create rule ``rule.id`` (or change the one of that id) as ``stageflow alerts
        rules add`` does; the rule as stored (``rule_id``, ``metric``, ``condition``,
        ``threshold``, ``severity``, ``cooldown_seconds``...). Raises
        ``InvalidAlertRule`` (every problem; nothing written), ``AlertNotFound`` (a
        pipeline that is not saved)."""
        from stageflow import operations as ops
        from stageflow.operations import alerts as alert_ops

        if not isinstance(rule, AlertRule):
            raise UsageError(
                f"add_alert_rule takes an AlertRule, not {type(rule).__name__}; give "
                "AlertRule(id=..., metric=..., condition=..., threshold=...)",
                field="rule",
            )
        with ops.writing(self.settings) as store:
            record = alert_ops.add_rule(
                store,
                rule.id,
                metric=rule.metric,
                condition=_value_of(rule.condition),
                threshold=rule.threshold,
                severity=_value_of(rule.severity),
                cooldown=rule.cooldown,
                window=rule.window,
                k=rule.k,
                runs=rule.runs,
                pipeline=rule.pipeline,
                task=rule.task,
                description=rule.description,
                channels=list(rule.channels),
                enabled=rule.enabled,
                owner=None,
                see_all=True,  # a local program, as the CLI: every rule
                may_run_commands=True,  # as the local CLI: a command channel is allowed
            )
        return alert_ops.rule_json(record)

    def remove_alert_rule(self, rule_id: str) -> None:
        """Delete rule ``rule_id`` (its alerts stay); ``AlertNotFound`` if there is none."""
        from stageflow import operations as ops
        from stageflow.operations import alerts as alert_ops

        with ops.writing(self.settings) as store:
            alert_ops.remove_rule(store, rule_id, owner=None, see_all=True)

    def list_alert_rules(self) -> list[dict[str, Any]]:
        """Every alert rule in the store, as ``stageflow alerts rules list`` shows them."""
        from stageflow import operations as ops
        from stageflow.operations import alerts as alert_ops

        with ops.writing(self.settings) as store:
            return [
                alert_ops.rule_json(r)
                for r in alert_ops.list_rules(store, owner=None, see_all=True)
            ]

    def get_alerts(
        self,
        severity: AlertSeverity | str | None = None,
        resolved: bool | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Alerts, newest first, as ``stageflow alerts list --format json`` gives them:
        of ``severity`` only when given; ``resolved=True`` the resolved ones,
        ``resolved=False`` the open and acknowledged ones, ``None`` all; at most
        ``limit``. Raises ``UsageError`` (an unknown severity, a limit out of range)."""
        from stageflow import operations as ops
        from stageflow.operations import alerts as alert_ops

        wanted = None if severity is None else _value_of(severity)
        states: list[str | None] = (
            [None] if resolved is None else (["resolved"] if resolved else ["open", "acknowledged"])
        )
        with ops.writing(self.settings) as store:
            found = [
                alert
                for state in states
                for alert in alert_ops.list_alerts(
                    store, state=state, severity=wanted, limit=limit, owner=None, see_all=True
                )
            ]
        found.sort(key=lambda a: (a.opened_at, a.alert_id), reverse=True)
        return [alert_ops.alert_json(a) for a in found[:limit]]

    def acknowledge_alert(self, alert_id: str, by: str | None = None) -> dict[str, Any]:
        """Acknowledge open alert ``alert_id``, recording ``by`` (default: the local
        user), as ``stageflow alerts ack``; the alert now. Raises ``AlertNotFound``,
        ``UsageError`` (it is not open)."""
        return self._move(alert_id, "ack", by)

    def resolve_alert(self, alert_id: str, by: str | None = None) -> dict[str, Any]:
        """Resolve open or acknowledged alert ``alert_id``, recording ``by`` (default:
        the local user), as ``stageflow alerts resolve``; the alert now. Raises
        ``AlertNotFound``, ``UsageError`` (it is resolved already)."""
        return self._move(alert_id, "resolve", by)

    # -- the background ---------------------------------------------------------------------

    def start_monitoring(self) -> None:
        """Sample (and, with ``enable_alerting``, evaluate deadlines and rules) in this
        process from now on, on a thread; does nothing when started already. Raises
        ``StoreError`` when the store cannot be reached."""
        from stageflow import operations as ops
        from stageflow.runtime.duties import run_duties

        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            store = ops.open_for_service(self.settings)  # unreachable: said here
            try:
                duties = self._duties(store)
            except BaseException:
                store.close()
                raise
            stop = threading.Event()
            wait = min(self.sampling_interval_seconds, _MAX_PASS_SECONDS)

            def serve() -> None:
                try:
                    while not stop.is_set():
                        run_duties(duties, time.time())
                        stop.wait(wait)
                finally:
                    store.close()

            thread = threading.Thread(target=serve, name="stageflow-monitor", daemon=True)
            thread.start()
            self._thread, self._stop = thread, stop

    def stop_monitoring(self) -> None:
        """Stop sampling and alerting here: the thread ends after its pass in progress
        and is joined. Does nothing when not started."""
        with self._lock:
            thread, stop = self._thread, self._stop
            if thread is None or stop is None:
                return
            stop.set()
            thread.join(_JOIN_SECONDS)
            if thread.is_alive():
                logger.warning("the monitor's thread did not end in time; left as a daemon")
            self._thread, self._stop = None, None

    @property
    def monitoring(self) -> bool:
        """Whether ``start_monitoring`` was called and its thread is alive."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> PipelineMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_monitoring()

    # -- helpers ----------------------------------------------------------------------------

    def _duties(self, store: Store) -> list[Duty]:
        from stageflow.runtime.monitor import MonitorDuty

        duties: list[Duty] = [MonitorDuty.from_settings(self.settings, store)]
        if self.enable_alerting:
            from stageflow.runtime.alerting import AlertDuty

            duties.append(
                AlertDuty(self.settings, store, rules_every=self.sampling_interval_seconds)
            )
        return duties

    def _range(self, start: Time | None, end: Time | None) -> tuple[float, float]:
        from stageflow import operations as ops

        return ops.time_range(
            _text_of(start, "start_time"),
            _text_of(end, "end_time"),
            time.time(),
            names=("start_time", "end_time"),
        )

    def _move(self, alert_id: str, action: str, by: str | None) -> dict[str, Any]:
        import getpass

        from stageflow import operations as ops
        from stageflow.operations import alerts as alert_ops

        who = by or getpass.getuser()
        with ops.writing(self.settings) as store:
            do = alert_ops.ack_alert if action == "ack" else alert_ops.resolve_alert
            alert = do(store, alert_id, by=who, owner=None, see_all=True)
        return alert_ops.alert_json(alert)


def _value_of(value: Enum | str) -> str:
    """An enum member's value, or the text as given (``operations`` checks it)."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def _names_of(names: Sequence[str] | str) -> list[str]:
    """``metric_names`` as a list: one name given as text is that one name."""
    return [names] if isinstance(names, str) else list(names)


def _text_of(value: Time | None, field: str) -> str | None:
    """A time as the text ``operations.time_range`` reads: a ``datetime`` (UTC when
    naive) or epoch seconds as ISO 8601; text as given. ``UsageError`` naming ``field``
    for anything else."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.isoformat(timespec="microseconds")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat(timespec="microseconds")
        except (OverflowError, OSError, ValueError):
            pass
    raise UsageError(
        f"{field} {value!r} is not a time; give a datetime, epoch seconds, ISO 8601 text "
        "(2026-03-01T12:00:00Z), now, or a time relative to now (-1h, -30m, -2d)",
        field=field,
    )
