"""Notifications: a ``Message`` sent to channels (webhook, e-mail, command), exactly once
per key, in the background, with retries; and the pipeline hooks that send them.

Policy. ``notify`` records one delivery per channel in the store's delivery log
(``Store.add_notifications``) under the notification's ``key`` and returns: recording
the same key again (another process saw the same run end) records and sends nothing.
The deliveries are then sent by this process's sender thread (``_Sender``, one per
store, with a store connection of its own), never by the caller: a run is never
blocked or failed by a channel. Each try claims its row by compare-and-set
(``Store.claim_notification``), so however many processes see a delivery due, one
sends it; a failed try is tried again after ``engine.delivery.next_try_delay``
(1 s, 4 s, 16 s by default: ``STAGEFLOW_NOTIFY_TRIES``,
``STAGEFLOW_NOTIFY_BACKOFF_SECONDS``) and the row holds its attempts and last error;
after the last try it is ``failed``. A process waits at exit up to
``STAGEFLOW_NOTIFY_WAIT_SECONDS`` (10 s) for its deliveries, so ``stageflow run`` of a
failing pipeline has told its channels before it returns; what is still pending then
(and what a process that died left) is sent by ``NotificationDuty``, which every worker
and scheduler runs each second (``runtime.duties``).

Channels (``spec.models.Channel``). ``webhook``: a Slack-compatible JSON post
(``{"text"}`` and the message's fields), with ``operators.ml.notification.post_json``.
``email``: over SMTP, to ``STAGEFLOW_SMTP_URL``'s server from ``STAGEFLOW_SMTP_FROM``.
``command``: the argv run without a shell, the message as JSON on its stdin and as
``STAGEFLOW_NOTIFY_*`` variables. A ``${secret:NAME}`` in a URL, an address, an argv
item or the SMTP URL is resolved only when it is sent (``runtime.secrets``): rows and
messages hold the reference, errors are masked, and a webhook is shown only as its
scheme and host (``engine.delivery.shown_target``).

Hooks. ``run_hooks`` gives the observer (``runtime.observers``) a run subscribes when its
pipeline has ``on_failure``/``on_success``/``on_retry`` channels: a run's end in
``failed``/``success`` and each task attempt that failed and will be retried become one
notification each (keys ``on_failure:RUN:ENDED_AT``, ``on_retry:RUN:TASK:ATTEMPT``).

State: the process's senders by store (their pending ids and when each is due).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from stageflow.engine.delivery import next_try_delay, shown_target
from stageflow.engine.error_lines import error_lines
from stageflow.runtime import secrets
from stageflow.runtime.settings import Settings
from stageflow.runtime.store.base import NotificationRecord, Store

if TYPE_CHECKING:
    from stageflow.engine.scheduler import Transition
    from stageflow.runtime.observers import RunEvent
    from stageflow.runtime.result import RunResult
    from stageflow.spec.models import Pipeline

__all__ = [
    "CLAIM_SECONDS",
    "SEND_TIMEOUT",
    "Message",
    "NotificationDuty",
    "deliver",
    "notify",
    "run_hooks",
    "run_link",
    "wait_for_deliveries",
]

logger = logging.getLogger(__name__)

#: Seconds one try may take (HTTP, SMTP, a command) before it counts as failed.
SEND_TIMEOUT = 10.0
#: Seconds a claim lasts: longer than any try, so a live claimer never loses it.
CLAIM_SECONDS = 60.0
_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Message:
    """What a notification says (one shape for hooks, alerts, deadlines)."""

    kind: str  # "on_failure" | "on_success" | "on_retry" | "alert" | "deadline" | ...
    subject: str  # one line
    text: str  # the body (plain text)
    pipeline: str | None = None
    run_id: str | None = None
    task: str | None = None
    error: str | None = None
    severity: str | None = None  # "info" | "warning" | "critical" for alerts
    link: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def notify(
    settings: Settings,
    store: Store,
    channels: Sequence[Mapping[str, Any]],
    message: Message,
    *,
    key: str,
    owner: str | None = None,
) -> int:
    """Record one delivery per channel under ``key`` (exactly once per key and channel
    index) and deliver them in the background with retries; returns how many were
    recorded now (0 when the key was recorded before). Never raises for a channel's
    failure; raises nothing that fails a run (a store that cannot record logs a
    warning and records nothing). ``owner``: who may list the deliveries (the run's)."""
    now = time.time()
    body = message.as_json()
    rows = [
        NotificationRecord(
            id=0,
            key=key,
            channel_index=index,
            created_at=now,
            kind=message.kind,
            pipeline=message.pipeline,
            run_id=message.run_id,
            task=message.task,
            owner=owner,
            channel_kind=_kind(channel),
            target=shown_target(channel),
            channel=dict(channel),
            message=body,
            next_try_at=now,
        )
        for index, channel in enumerate(channels)
    ]
    if not rows:
        return 0
    try:
        added = store.add_notifications(rows)
    except Exception:  # a run must not fail for its notification
        logger.warning("notification %s was not recorded", key, exc_info=True)
        return 0
    if added:
        _sender(settings).add(added, now)
    return len(added)


def deliver(settings: Settings, store: Store, notification_id: int, now: float) -> float | None:
    """Claim the delivery (compare-and-set), try it once and record the outcome; when
    its next try is due (epoch seconds), ``None`` when it is done or another process
    has it. Never raises for the channel's failure."""
    row = store.claim_notification(notification_id, now, now + CLAIM_SECONDS)
    if row is None:
        return None
    try:
        _send(settings, row)
    except Exception as exc:  # a channel's failure, whatever it is
        why = _why(exc)
        ended = time.time()
        delay = next_try_delay(row.attempts, settings.notify_tries, settings.notify_backoff)
        state, due = ("failed", None) if delay is None else ("pending", ended + delay)
        logger.warning(
            "notification %s to %s %s, try %d: %s%s",
            row.key,
            row.channel_kind,
            row.target,
            row.attempts,
            why,
            "" if due is None else f"; tried again in {delay:g}s",
        )
        store.finish_notification(
            row.id, row.attempts, state=state, error=why, next_try_at=due, now=ended
        )
        return due
    store.finish_notification(
        row.id, row.attempts, state="delivered", error=None, next_try_at=None, now=time.time()
    )
    logger.info("notification %s delivered to %s %s", row.key, row.channel_kind, row.target)
    return None


def wait_for_deliveries(timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until this process's senders have nothing pending;
    false when some delivery is still pending (the duty sends it later)."""
    deadline = time.monotonic() + timeout
    with _senders_lock:
        senders = list(_senders.values())
    return all(s.wait_idle(deadline - time.monotonic()) for s in senders)


def run_link(settings: Settings, run_id: str) -> str | None:
    """The run's address for a person (``STAGEFLOW_PUBLIC_URL`` + ``/api/v1/runs/ID``);
    ``None`` when no public URL is set."""
    if not settings.public_url:
        return None
    return f"{settings.public_url.rstrip('/')}/api/v1/runs/{run_id}"


def run_hooks(
    settings: Settings, store: Store, pipeline: Pipeline, run_id: str
) -> tuple[Callable[[RunEvent], None], bool] | None:
    """The observer of run ``run_id`` that sends its pipeline's hooks, and whether it
    wants task events (``on_retry``); ``None`` when the pipeline has no hooks."""
    if not (pipeline.on_failure or pipeline.on_success or pipeline.on_retry):
        return None
    hooks = {
        "failed": ("on_failure", [c.model_dump(exclude_none=True) for c in pipeline.on_failure]),
        "success": ("on_success", [c.model_dump(exclude_none=True) for c in pipeline.on_success]),
    }
    retry = [c.model_dump(exclude_none=True) for c in pipeline.on_retry]
    owner: list[str | None] = []

    def owner_of() -> str | None:
        if not owner:
            run = store.get_run(run_id)
            owner.append(run.owner if run is not None else None)
        return owner[0]

    def observe(event: RunEvent) -> None:
        try:
            hook(event)
        except Exception:  # a hook never stops the run's other observers
            logger.warning("run %s: a notification hook failed", run_id, exc_info=True)

    def hook(event: RunEvent) -> None:
        from stageflow.engine.states import TaskState

        t = event.transition
        if event.kind == "task" and t is not None and t.new is TaskState.UP_FOR_RETRY:
            if retry:
                message = _retry_message(settings, pipeline.name, run_id, t)
                key = f"on_retry:{run_id}:{t.task_id}:{t.attempt}"
                notify(settings, store, retry, message, key=key, owner=owner_of())
        elif event.kind == "finished" and event.result is not None:
            kind, channels = hooks.get(event.result.state, ("", []))
            if channels:
                result = event.result
                key = f"{kind}:{run_id}:{result.ended_at!r}"
                message = _run_message(settings, kind, result)
                notify(settings, store, channels, message, key=key, owner=owner_of())

    return observe, bool(retry)


class NotificationDuty:
    """The background duty (``runtime.duties``): each second, hand the deliveries due
    (left pending by a process that exited or died, or whose retry is due) to this
    process's sender, which claims each by compare-and-set before it sends it."""

    name = "notifications"

    def __init__(self, settings: Settings, store: Store, interval: float = 1.0) -> None:
        self.settings = settings
        self.store = store
        self.interval = interval
        self._last = float("-inf")

    def run_pass(self, now: float) -> None:
        if now - self._last < self.interval:
            return
        self._last = now
        due = self.store.due_notifications(now, limit=100)
        if due:
            _sender(self.settings).add(due, now)


# -- sending ---------------------------------------------------------------------


def _send(settings: Settings, row: NotificationRecord) -> None:
    """Send ``row`` once; raises why it failed."""
    channel, message = row.channel, row.message
    if row.channel_kind == "webhook":
        from stageflow.operators.ml.notification import post_json

        url = str(secrets.resolve(channel["webhook"]))
        payload = {"text": _text(message), **message}
        post_json(url, payload, SEND_TIMEOUT)
    elif row.channel_kind == "email":
        _send_email(settings, channel, message)
    else:
        _run_command(channel, message)


def _send_email(settings: Settings, channel: Mapping[str, Any], message: Mapping[str, Any]) -> None:
    import smtplib  # here: it loads ssl, which `stageflow run` need not
    from email.message import EmailMessage

    if not settings.smtp_url:
        raise _Failed(
            "no SMTP server: set STAGEFLOW_SMTP_URL (smtp://user@host:port) and "
            "STAGEFLOW_SMTP_FROM in the environment of the process that sends it"
        )
    parts = urlsplit(settings.smtp_url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise _Failed(
            f"STAGEFLOW_SMTP_URL must be smtp://[user@]host[:port] or smtps://..., got "
            f"{parts.scheme}://{parts.hostname or ''}"
        )
    to = [str(secrets.resolve(a)) for a in channel["email"]]
    mail = EmailMessage()
    mail["Subject"] = str(channel.get("subject") or message.get("subject") or "stageflow")
    mail["From"] = settings.smtp_from or f"stageflow@{socket.gethostname()}"
    mail["To"] = ", ".join(to)
    mail.set_content(str(message.get("text") or ""))
    smtp_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    with smtp_class(parts.hostname, port, timeout=SEND_TIMEOUT) as smtp:
        if parts.scheme == "smtp" and parts.username:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
        if parts.username:
            password = str(secrets.resolve(unquote(parts.password or "")))
            smtp.login(unquote(parts.username), password)
        smtp.send_message(mail)


def _run_command(channel: Mapping[str, Any], message: Mapping[str, Any]) -> None:
    argv = [str(secrets.resolve(a)) for a in channel["command"]]
    env = dict(os.environ)
    for name, value in message.items():
        env[f"STAGEFLOW_NOTIFY_{name.upper()}"] = "" if value is None else str(value)
    try:
        done = subprocess.run(  # an argv, no shell; admin-only over the API
            argv,
            input=json.dumps(message),
            env=env,
            capture_output=True,
            text=True,
            timeout=SEND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise _Failed(f"command {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise _Failed(f"command {argv[0]!r} did not end within {SEND_TIMEOUT:g}s") from None
    if done.returncode != 0:
        last = [line for line in (done.stderr or "").splitlines() if line.strip()][-1:]
        raise _Failed(
            f"command {argv[0]!r} exited {done.returncode}" + (f": {last[0]}" if last else "")
        )


class _Failed(Exception):
    """A try that failed, with a message to record as it is."""


def _why(exc: BaseException) -> str:
    if isinstance(exc, secrets.MissingSecret | _Failed):
        why = str(exc)
    else:
        from stageflow.operators.ml.notification import PostFailed

        why = str(exc) if isinstance(exc, PostFailed) else f"{type(exc).__name__}: {exc}"
    why = secrets.mask(why)
    return why if len(why) <= _ERROR_CHARS else why[: _ERROR_CHARS - 3] + "..."


def _kind(channel: Mapping[str, Any]) -> str:
    for kind in ("webhook", "email", "command"):
        if channel.get(kind) is not None:
            return kind
    raise ValueError(f"not a channel (webhook, email or command): {sorted(channel)}")


def _text(message: Mapping[str, Any]) -> str:
    return str(message.get("text") or message.get("subject") or "")


# -- messages --------------------------------------------------------------------


def _run_message(settings: Settings, kind: str, result: RunResult) -> Message:
    failed = [(tid, r) for tid, r in result.tasks.items() if r.state == "failed"]
    task, error = (failed[0][0], failed[0][1].error or "failed") if failed else (None, None)
    link = run_link(settings, result.run_id)
    subject = f"stageflow: pipeline '{result.pipeline}' run {result.run_id} {result.state}"
    lines = [f"pipeline '{result.pipeline}', run {result.run_id}: {result.state}"]
    for tid, r in failed[:5]:
        lines.append(f"task '{tid}' failed (attempt {r.attempts}):")
        lines.extend(f"  {line}" for line in error_lines(r.error or "failed"))
    if len(failed) > 5:
        lines.append(f"... and {len(failed) - 5} more failed tasks")
    if link:
        lines.append(link)
    return Message(
        kind=kind,
        subject=subject,
        text="\n".join(lines),
        pipeline=result.pipeline,
        run_id=result.run_id,
        task=task,
        error=None if error is None else "\n".join(error_lines(error)),
        severity="critical" if kind == "on_failure" else "info",
        link=link,
    )


def _retry_message(settings: Settings, pipeline: str, run_id: str, t: Transition) -> Message:
    error = "\n".join(error_lines(t.message or "failed"))
    due = (t.due_at or t.at) - t.at
    link = run_link(settings, run_id)
    subject = (
        f"stageflow: pipeline '{pipeline}' run {run_id}: task '{t.task_id}' attempt "
        f"{t.attempt} failed, retrying"
    )
    lines = [
        f"pipeline '{pipeline}', run {run_id}: task '{t.task_id}' attempt {t.attempt} "
        f"failed; retry due in {due:.1f}s",
        *(f"  {line}" for line in error_lines(t.message or "failed")),
    ]
    if link:
        lines.append(link)
    return Message(
        kind="on_retry",
        subject=subject,
        text="\n".join(lines),
        pipeline=pipeline,
        run_id=run_id,
        task=t.task_id,
        error=error,
        severity="warning",
        link=link,
    )


# -- the sender thread --------------------------------------------------------------


class _Sender:
    """One store's deliveries of this process: ids and when each is due, sent by one
    daemon thread with its own store connection (opened when it starts, closed when
    nothing is left)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._due: dict[int, float] = {}
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, ids: Sequence[int], now: float) -> None:
        with self._cond:
            for i in ids:
                self._due.setdefault(i, now)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="stageflow-notify", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self._due or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _loop(self) -> None:
        from stageflow.runtime.store import open_store

        try:
            store = open_store(self.settings.database_url, self.settings.home)
        except Exception:
            logger.warning("notifications: cannot open the store; the duty sends them later")
            with self._cond:
                self._due.clear()
                self._thread = None
                self._cond.notify_all()
            return
        try:
            self._serve(store)
        finally:
            with contextlib.suppress(Exception):
                store.close(wait=False)

    def _serve(self, store: Store) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._due:
                        self._thread = None
                        self._cond.notify_all()
                        return
                    now = time.time()
                    ready = [i for i, at in self._due.items() if at <= now]
                    if ready:
                        for i in ready:
                            del self._due[i]
                        self._busy = True
                        break
                    self._cond.wait(min(self._due.values()) - now)
            try:
                for i in ready:
                    try:
                        again = deliver(self.settings, store, i, time.time())
                    except Exception:  # the store failed: the duty tries it later
                        logger.warning("notification %d: not sent", i, exc_info=True)
                        again = None
                    if again is not None:
                        with self._cond:
                            self._due[i] = again
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


_senders: dict[tuple[str | None, str], _Sender] = {}
_senders_lock = threading.Lock()
_wait_at_exit: list[float] = []


def _sender(settings: Settings) -> _Sender:
    key = (settings.database_url, str(settings.home.resolve()))
    with _senders_lock:
        sender = _senders.get(key)
        if sender is None:
            sender = _senders[key] = _Sender(settings)
        if not _wait_at_exit:
            atexit.register(_at_exit)
        _wait_at_exit.append(settings.notify_wait)
        del _wait_at_exit[:-1]  # the latest settings' wait
    return sender


def _at_exit() -> None:
    wait = _wait_at_exit[-1] if _wait_at_exit else 0.0
    if wait > 0 and not wait_for_deliveries(wait):
        logger.warning(
            "notifications still pending after %gs; a worker or scheduler sends them", wait
        )
