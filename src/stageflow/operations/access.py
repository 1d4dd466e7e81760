"""Access: API tokens, roles, owners (teams), the audit log.

Policy. A token is ``sft_<id>_<secret>``: the public id finds the row, the secret's
sha256 is compared in constant time (the secret is never stored, and printed once by
``create_token``). Tokens are random (32 bytes), so a plain sha256 is enough: there
is no password to guess. A revoked or expired token authenticates nobody.

Roles, each with everything of the ones before it:

* ``viewer``: reads pipelines, runs, logs, results, metrics;
* ``operator``: + submits, cancels, pauses, unpauses and retries runs, decides approvals;
* ``editor``: + saves and deletes pipelines made only of built-in operators;
* ``admin``: + tokens, the audit log, and pipelines that run arbitrary code
  (``bash``, ``custom_script``, ``python``, ``call:`` targets, fallback calls).

Owners: a token may belong to an owner (a team). A non-admin sees and changes only
its owner's pipelines and runs; anything else is "not found" (never "forbidden":
that would tell it exists). An admin sees everything. A token without an owner is
the owner ``None``: it sees the pipelines and runs that have no owner (the CLI's).

Confinement (``Confinement``, ``check_confined``): what a non-admin's spec or run over
the API may make the server reach, checked when the spec is saved or the run accepted:
files under the data roots only (``path_problems``), public network hosts or those of
``STAGEFLOW_API_ALLOWED_HOSTS`` only (``network_problems``: no loopback, private
network or cloud metadata), and with a task sensor only the runs of pipelines its team
sees (``task_sensor_problems``). An admin is not confined.

The audit log keeps every mutating request and control action: who, what, when,
from where, the outcome (an HTTP status).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from stageflow.errors import UsageError
from stageflow.runtime.result import iso
from stageflow.runtime.store.base import AuditEntry, Store, TokenRecord

if TYPE_CHECKING:
    from stageflow.runtime.settings import Settings
    from stageflow.spec.models import Pipeline

__all__ = [
    "NEEDS",
    "ROLES",
    "AuditPage",
    "Confinement",
    "CreatedToken",
    "Identity",
    "TokenInfo",
    "audit_log",
    "authenticate",
    "check_channels",
    "check_confined",
    "check_object_path",
    "check_run_paths",
    "code_tasks",
    "confinement",
    "create_token",
    "data_roots",
    "list_tokens",
    "may",
    "network_problems",
    "path_problems",
    "record_audit",
    "revoke_token",
    "sees",
    "task_sensor_problems",
]

Role = Literal["viewer", "operator", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "editor", "admin")
#: What each action needs at least.
NEEDS: dict[str, Role] = {
    "read": "viewer",
    "operate": "operator",
    "edit": "editor",
    "admin": "admin",
}
Action = Literal["read", "operate", "edit", "admin"]


_PREFIX = "sft"
_TOKEN = re.compile(r"sft_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_OWNER = _NAME
MAX_TOKEN_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: a token's name, role and owner (``via`` says how it was known)."""

    name: str
    role: Role
    owner: str | None
    via: Literal["token", "local"] = "token"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "owner": self.owner, "via": self.via}


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed: never its secret."""

    token_id: str
    name: str
    role: str
    owner: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        out = {
            "token_id": self.token_id,
            "name": self.name,
            "role": self.role,
            "owner": self.owner,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }
        if now is not None:
            out["state"] = self.state(now)
        return out


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """A new token: ``token`` is the only time its secret is shown."""

    token: str
    info: TokenInfo


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": [
                {
                    "id": e.entry_id,
                    "at": iso(e.at),
                    "actor": e.actor,
                    "role": e.role,
                    "owner": e.owner,
                    "action": e.action,
                    "target": e.target,
                    "client": e.client,
                    "status": e.status,
                    "detail": e.detail,
                }
                for e in self.entries
            ],
            "next_cursor": self.next_cursor,
        }


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise UsageError(f"unknown role '{role}'; use one of: {', '.join(ROLES)}", field="role")


def create_token(
    store: Store,
    name: str,
    role: str,
    *,
    owner: str | None = None,
    expires_days: float | None = None,
    now: float,
) -> CreatedToken:
    """A new token (its secret is shown here only). ``UsageError`` for a bad name,
    role, owner or expiry, or a name in use."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"token name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-' "
            "(starting with a letter or digit)",
            field="name",
        )
    checked = check_role(role)
    if owner is not None and not _OWNER.fullmatch(owner):
        raise UsageError(
            f"owner {owner!r} must be 1-64 letters, digits, '.', '_', '@' or '-'", field="owner"
        )
    if expires_days is not None and not 0 < expires_days <= MAX_TOKEN_DAYS:
        raise UsageError(
            f"--expires is {expires_days:g} days; it must be more than 0 and at most "
            f"{MAX_TOKEN_DAYS}",
            field="expires",
        )
    if any(t.name == name for t in store.tokens()):
        raise UsageError(
            f"a token named '{name}' exists already; choose another name "
            "(`stageflow tokens list` shows them; a revoked token keeps its name)",
            field="name",
        )
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        name=name,
        role=checked,
        owner=owner,
        secret_sha256=_digest(secret),
        created_at=now,
        expires_at=None if expires_days is None else now + expires_days * 86400.0,
    )
    store.add_token(record)
    return CreatedToken(f"{_PREFIX}_{token_id}_{secret}", _info(record))


def list_tokens(store: Store) -> list[TokenInfo]:
    return [_info(t) for t in store.tokens()]


def revoke_token(store: Store, name: str, *, now: float) -> None:
    """``UsageError`` when no live token has that name."""
    if not store.revoke_token(name, now):
        names = [t.name for t in store.tokens() if t.revoked_at is None]
        known = ", ".join(names) if names else "none"
        raise UsageError(f"no live token named '{name}'; live tokens: {known}", field="name")


def authenticate(store: Store, presented: str, *, now: float) -> Identity | None:
    """The identity a bearer token stands for; ``None`` when it is malformed,
    unknown, revoked, expired or its secret does not match."""
    found = _TOKEN.fullmatch(presented.strip())
    if found is None:
        return None
    token_id, secret = found.groups()
    record = store.get_token(token_id)
    if record is None:
        return None
    if not hmac.compare_digest(record.secret_sha256, _digest(secret)):
        return None
    if record.revoked_at is not None:
        return None
    if record.expires_at is not None and record.expires_at <= now:
        return None
    return Identity(record.name, check_role(record.role), record.owner)


def may(identity: Identity, action: Action) -> bool:
    """Whether ``identity``'s role allows ``action``."""
    return ROLES.index(identity.role) >= ROLES.index(NEEDS[action])


def sees(identity: Identity, owner: str | None) -> bool:
    """Whether ``identity`` may see a pipeline or run of ``owner`` (admins see all)."""
    return identity.is_admin or identity.owner == owner


def code_tasks(pipeline: Pipeline) -> list[str]:
    """The tasks of ``pipeline`` that run arbitrary code (``operators.imports_code``:
    ``bash``/``custom_script``/``python``, ``call:`` targets, fallback calls, a feature
    step's ``call``, an ``algorithm`` class path of one's own): only an admin may save
    or run them over the API."""
    from stageflow.operators.registry import imports_code

    return [task.id for task in pipeline.tasks if imports_code(task)]


def record_audit(
    store: Store,
    *,
    at: float,
    actor: str,
    action: str,
    status: int,
    role: str | None = None,
    owner: str | None = None,
    target: str | None = None,
    client: str | None = None,
    detail: str | None = None,
) -> int:
    return store.add_audit(
        AuditEntry(
            at=at,
            actor=actor,
            action=action,
            status=status,
            role=role,
            owner=owner,
            target=target,
            client=client,
            detail=detail[:2000] if detail else detail,
        )
    )


def audit_log(
    store: Store,
    *,
    since: float | None = None,
    actor: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> AuditPage:
    """The audit log, newest first; ``cursor``: the ``next_cursor`` of the page before."""
    if not 1 <= limit <= 1000:
        raise UsageError(f"limit is {limit}; it must be 1..1000", field="limit")
    before: int | None = None
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdecimal()):
            raise UsageError(
                f"cursor {cursor!r} is not one this log gave; use the next_cursor of a page",
                field="cursor",
            )
        before = int(cursor)
    entries = store.audit_entries(since=since, actor=actor, before_id=before, limit=limit)
    more = len(entries) == limit
    return AuditPage(entries, str(entries[-1].entry_id) if more and entries else None)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(t: TokenRecord) -> TokenInfo:
    return TokenInfo(
        t.token_id,
        t.name,
        t.role,
        t.owner,
        t.created_at,
        t.expires_at,
        t.revoked_at,
        t.last_used_at,
    )


#: Parameter names that hold a file or folder (and any ending in _path, _file, _dir).
PATH_KEYS = frozenset(
    {"source", "path", "to", "destination", "output", "target", "file", "files", "dir", "uri"}
)
_PATH_ENDINGS = ("_path", "_file", "_dir", "_paths", "_files")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LOCAL_DB = re.compile(r"^(?:sqlite|duckdb)(?:\+[A-Za-z0-9_]+)?:///([^?]+)")


def data_roots(settings: Settings) -> tuple[str, ...]:
    """Where a non-admin's files may be over the API: ``STAGEFLOW_API_DATA_ROOTS``, else
    ``<home>/data``."""
    return settings.api_data_roots or (str((settings.home / "data").absolute()),)


@dataclass(frozen=True, slots=True)
class Confinement:
    """What a non-admin's specs and runs over the API may reach: files under ``roots``
    (``path_problems``), network hosts that are public or in ``allowed_hosts``
    (``network_problems``), and other pipelines' task states only of pipelines
    ``identity`` sees (``task_sensor_problems``)."""

    identity: Identity
    roots: tuple[str, ...]
    allowed_hosts: tuple[str, ...] = ()


def confinement(settings: Settings, identity: Identity) -> Confinement | None:
    """What ``identity``'s specs and runs are confined to; ``None`` for an admin (not
    confined). What the API passes as ``confine`` to the operations that create runs
    (``submit_saved``, ``requeue_retry``, ``trigger_schedule``, ``fire_event``,
    ``add_schedule``, ``check_spec_schedules``) and to ``check_confined``."""
    if identity.is_admin:
        return None
    return Confinement(identity, data_roots(settings), settings.api_allowed_hosts)


def path_problems(
    pipeline: Pipeline, roots: tuple[str, ...], params: Mapping[str, Any] | None = None
) -> list[tuple[str, str, str]]:
    """(task, field, why) for each file path in ``pipeline``'s task parameters that a
    non-admin may not use over the API: an absolute path outside every one of ``roots``,
    or a relative one that climbs out of where it is read (``..``). URLs (``s3://``,
    ``https://``, ``sklearn:`` datasets) are not paths; ``file://`` ones are, and so is
    the file of a ``sqlite:///`` or ``duckdb:///`` database URL.

    The task parameters are checked as a run reads them: with ``${params.NAME}``
    substituted from the pipeline's declared ``params`` and ``params`` on top (a run's
    own values), so a path that comes from a run parameter or its default is checked
    too, and ``why`` names that parameter. Under a file key (``source: {...}``) every
    text is a path, whatever its own key."""
    import os

    out: list[tuple[str, str, str]] = []
    real_roots = [os.path.realpath(r) for r in roots]
    for task, field, value, raw, key_path in _parameter_texts(pipeline, params):
        if key_path:
            why = _path_problem(value, roots, real_roots, _came(raw))
            if why is not None:
                out.append((task, field, why))
    return out


def _parameter_texts(
    pipeline: Pipeline, params: Mapping[str, Any] | None
) -> Iterator[tuple[str, str, str, object, bool]]:
    """Every text in ``pipeline``'s task parameters as a run reads them: (task, field,
    the text with ``${params.NAME}`` substituted from the declared ``params`` and
    ``params`` on top, the same place before substitution, whether it is under a file
    key: ``PATH_KEYS``, a key ending like a path, or anything below such a key)."""
    from stageflow.runtime.plan import declared_values
    from stageflow.spec.params import substitute

    values = {**declared_values(pipeline), **(params or {})}

    def walk(
        task: str, prefix: str, value: object, raw: object, key: str, path: bool
    ) -> Iterator[tuple[str, str, str, object, bool]]:
        # ``raw``: the same place before substitution (a whole ``${params.x}`` may have
        # become a list or a mapping: its items keep the text they came from).
        path = path or key in PATH_KEYS or key.endswith(_PATH_ENDINGS)
        if isinstance(value, dict):
            for k, v in value.items():
                inner = raw.get(k, raw) if isinstance(raw, dict) else raw
                yield from walk(task, f"{prefix}.{k}", v, inner, str(k), path)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                inner = raw[i] if isinstance(raw, list) and i < len(raw) else raw
                yield from walk(task, f"{prefix}.{i}", v, inner, key, path)
        elif isinstance(value, str):
            yield task, prefix, value, raw, path

    for t in pipeline.tasks:
        try:
            given = substitute(dict(t.parameters), values) if t.parameters else {}
        except KeyError:  # an undeclared parameter: validation names it
            given = t.parameters
        yield from walk(t.id, "parameters", given, t.parameters, "", False)


def _path_problem(
    value: str, roots: tuple[str, ...], real_roots: list[str], came: str = ""
) -> str | None:
    """Why ``value`` is a file path outside ``roots`` (or climbing out), else ``None``."""
    import os

    text = value.removeprefix("file://") if value.startswith("file://") else value
    local_db = _LOCAL_DB.match(value)  # sqlite:///rel.db, sqlite:////abs.db: a file
    if local_db is not None:
        text = local_db.group(1)
    if text is value and (_SCHEME.match(value) or re.match(r"^[a-z]+:[^/\\]", value)):
        return None  # a URL, or a named dataset such as sklearn:wine
    if os.path.isabs(text) or text.startswith("~"):
        real = os.path.realpath(os.path.expanduser(text))
        if not any(real == r or real.startswith(r + os.sep) for r in real_roots):
            shown = ", ".join(roots) if roots else "none are configured"
            return f"{value!r}{came} is outside the data roots ({shown})"
    elif ".." in text.replace("\\", "/").split("/"):
        return f"{value!r}{came} climbs out of its folder ('..')"
    return None


def check_object_path(
    url: str, confine: Confinement | None, *, field: str, where: str | None = None
) -> None:
    """``Forbidden`` naming ``field`` when ``url`` (an object schedule's: the files it
    lists become its runs' ``${schedule.object}``) is a local path outside ``confine``;
    nothing for a remote URL or when ``confine`` is ``None`` (an admin). ``where``: what
    the message calls it (default: ``field``)."""
    import os

    if confine is None:
        return
    roots = confine.roots
    why = _path_problem(url, roots, [os.path.realpath(r) for r in roots])
    if why is not None:
        from stageflow.operations.pipelines import Forbidden

        raise Forbidden(
            f"{where or field}: {why}; a non-admin's object schedule over the API may watch files "
            "under STAGEFLOW_API_DATA_ROOTS only",
            field=field,
        )


def check_run_paths(
    pipeline: Pipeline, params: Mapping[str, Any], confine: tuple[str, ...] | None
) -> None:
    """``Forbidden`` (403) naming the first task, field and run parameter whose file path
    a run of ``pipeline`` with ``params`` (on top of its declared ones) would read outside
    ``confine`` (``path_problems``); nothing when ``confine`` is ``None`` (an admin)."""
    if confine is None:
        return
    found = path_problems(pipeline, confine, params)
    if not found:
        return
    from stageflow.operations.pipelines import Forbidden

    task, field, why = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise Forbidden(
        f"{why}{more}; a run started over the API by a non-admin may name files under "
        "STAGEFLOW_API_DATA_ROOTS only (its parameters included); give a path under them, "
        "or ask an admin",
        pipeline=pipeline.name,
        task=task,
        field=field,
    )


def _came(raw: object) -> str:
    """`` (from run parameter 'x')`` when the text ``raw`` refers to run parameters."""
    from stageflow.spec.params import references

    names = list(dict.fromkeys(references(raw))) if isinstance(raw, str) else []
    if not names:
        return ""
    listed = ", ".join(repr(n) for n in names)
    return f" (from run parameter{'s' if len(names) > 1 else ''} {listed})"


# -- the network a non-admin's spec may reach ---------------------------------------------

_HTTP_URL = re.compile(r"^https?://", re.IGNORECASE)
#: Where to fix a refused host (every network message says it).
ALLOWED_HOSTS_ADVICE = "ask an admin to add the host to STAGEFLOW_API_ALLOWED_HOSTS"


def network_problems(
    pipeline: Pipeline, allowed_hosts: tuple[str, ...], params: Mapping[str, Any] | None = None
) -> list[tuple[str | None, str, str]]:
    """(task, field, why) for each http(s) URL of ``pipeline`` a non-admin may not make
    the server's workers reach over the API (server-side request forgery): a URL whose
    host resolves (``socket.getaddrinfo``; a literal IP is read as it is) to a loopback,
    private, link-local, reserved, multicast, unspecified or otherwise non-public
    address, or does not resolve, unless the host is one of ``allowed_hosts``
    (``STAGEFLOW_API_ALLOWED_HOSTS``: ``host`` or ``host:port``, matched exactly).

    Checked: every text that is an http(s) URL in the task parameters (an http sensor's
    ``url``, a ``data_ingestion``/``batch_inference`` source ...), with ``${params.NAME}``
    substituted as a run reads them (``path_problems``; ``why`` names the run parameter),
    and every webhook channel (``on_failure``/``on_success``/``on_retry``, a deadline's,
    an alert rule's; ``task`` is ``None`` but for a task's deadline). A webhook held by a
    ``${secret:NAME}`` is the server's own setting and is not checked.

    The check happens when a spec is saved or a run is accepted: a host whose DNS answer
    changes afterwards (DNS rebinding) is not caught. A public URL that redirects to a
    non-public address is refused where it is opened (``operators.addresses``)."""
    out: list[tuple[str | None, str, str]] = []

    def check(task: str | None, field: str, url: str, raw: object) -> None:
        why = _host_problem(url, allowed_hosts)
        if why is not None:
            out.append((task, field, f"{url!r}{_came(raw)} {why}"))

    for task, field, value, raw, _ in _parameter_texts(pipeline, params):
        if _HTTP_URL.match(value):
            check(task, field, value, raw)
    for t in pipeline.tasks:
        if t.deadline is not None:
            for i, channel in enumerate(t.deadline.channels):
                if channel.webhook is not None and _HTTP_URL.match(channel.webhook):
                    check(t.id, f"deadline.channels.{i}.webhook", channel.webhook, None)
    for field, channel in _pipeline_channels(pipeline):
        if channel.webhook is not None and _HTTP_URL.match(channel.webhook):
            check(None, f"{field}.webhook", channel.webhook, None)
    return out


def check_channels(channels: Sequence[Mapping[str, Any]], confine: Confinement | None) -> None:
    """``Forbidden`` (403) naming ``channels[K].webhook`` when a webhook of ``channels``
    (an alert rule's, as the API takes them) reaches a host that is not public nor in
    ``confine``'s allowed hosts (``network_problems``); nothing for an admin (``None``).
    Checked when the rule is accepted, not when it fires."""
    if confine is None:
        return
    for k, channel in enumerate(channels):
        url = channel.get("webhook")
        if not isinstance(url, str) or not _HTTP_URL.match(url):
            continue
        why = _host_problem(url, confine.allowed_hosts)
        if why is not None:
            from stageflow.operations.pipelines import Forbidden

            raise Forbidden(
                f"{url!r} {why}; an alert rule added over the API by a non-admin may post to "
                f"public hosts only; use a public host, or {ALLOWED_HOSTS_ADVICE}",
                field=f"channels[{k}].webhook",
            )


def _pipeline_channels(pipeline: Pipeline) -> list[tuple[str, Any]]:
    """(field, channel) for each notification channel of ``pipeline`` itself."""
    found: list[tuple[str, Any]] = []
    for hook in ("on_failure", "on_success", "on_retry"):
        found += [(f"{hook}.{i}", c) for i, c in enumerate(getattr(pipeline, hook))]
    if pipeline.deadline is not None:
        found += [(f"deadline.channels.{i}", c) for i, c in enumerate(pipeline.deadline.channels)]
    for rule in pipeline.alerts:
        found += [(f"alerts.{rule.id}.channels.{i}", c) for i, c in enumerate(rule.channels)]
    return found


def _host_problem(url: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why a non-admin may not reach ``url`` (text to follow the URL), else ``None``
    (``operators.addresses``: which addresses are public)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return "is not a valid URL (its port or host does not parse)"
    if not host:
        return "names no host"
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    if _host_allowed(host, port, allowed_hosts):
        return None
    from stageflow.operators.addresses import host_kind

    found = host_kind(host, port)
    if found is None:
        return None
    address, kind = found
    if kind == "unresolved":
        return f"names host '{host}', which does not resolve"
    shown = host if address == host else f"{host} ({address})"
    article = "an" if kind[0] in "aeiou" else "a"
    return f"reaches {shown}, {article} {kind} address"


def _host_allowed(host: str, port: int, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether ``host`` (as ``urlsplit`` gives it: lower case, no brackets) on ``port``
    is one of ``allowed_hosts`` (``host``, ``host:port``, ``[v6]:port`` or a bare IPv6)."""
    for entry in allowed_hosts:
        text = entry.strip().lower()
        if text.startswith("["):
            name, _, rest = text[1:].partition("]")
            given = rest[1:] if rest.startswith(":") else None
        elif text.count(":") == 1:
            name, given = text.split(":")
        else:
            name, given = text, None
        if name == host and (given is None or given == str(port)):
            return True
    return False


# -- other pipelines a non-admin's task sensor may read ------------------------------------


def task_sensor_problems(
    store: Store,
    pipeline: Pipeline,
    identity: Identity,
    params: Mapping[str, Any] | None = None,
) -> list[tuple[str, str, str]]:
    """(task, field, why) for each ``kind: task`` sensor of ``pipeline`` (its ``pipeline``
    parameter with ``${params.NAME}`` substituted, as ``path_problems`` does) that names a
    pipeline ``identity`` may not see (``sees``: another team's, by the owner of its
    newest version, deleted or not). A name no pipeline has yet is fine: it may be
    created later, by the identity's team. Nothing for an admin."""
    from stageflow.runtime.plan import declared_values
    from stageflow.spec.params import substitute

    if identity.is_admin:
        return []
    out: list[tuple[str, str, str]] = []
    values = {**declared_values(pipeline), **(params or {})}
    for t in pipeline.tasks:
        if t.operator != "sensor" or not t.parameters:
            continue
        try:
            given = substitute(dict(t.parameters), values)
        except KeyError:  # an undeclared parameter: validation names it
            given = t.parameters
        other = given.get("pipeline")
        if given.get("kind") != "task" or not isinstance(other, str):
            continue
        exists, owner = store.pipeline_owner(other)
        if exists and not sees(identity, owner):
            came = _came(t.parameters.get("pipeline"))
            out.append(
                (
                    t.id,
                    "parameters.pipeline",
                    f"pipeline {other!r}{came} is another team's: token '{identity.name}' "
                    f"({_team(identity)}) may not read its runs, so a task sensor of its "
                    "pipelines may not wait for it; name a pipeline of your team, or ask an "
                    "admin",
                )
            )
    return out


def _team(identity: Identity) -> str:
    return f"team '{identity.owner}'" if identity.owner else "no team"


def check_confined(
    store: Store,
    pipeline: Pipeline,
    params: Mapping[str, Any],
    confine: Confinement | None,
    *,
    what: str = "a run started",
) -> None:
    """``Forbidden`` (403) naming the pipeline, the first task and field (and the run
    parameter) that would reach beyond ``confine``: a file outside its roots
    (``check_run_paths``), a host that is not public nor allowed (``network_problems``),
    another team's pipeline read by a task sensor (``task_sensor_problems``). Nothing
    when ``confine`` is ``None`` (an admin). ``what``: the message's subject (``a run
    started``, ``a spec saved``). Checked when a spec or run is accepted, not later."""
    if confine is None:
        return
    check_run_paths(pipeline, params, confine.roots)
    from stageflow.operations.pipelines import Forbidden

    hosts = network_problems(pipeline, confine.allowed_hosts, params)
    if hosts:
        task, field, why = hosts[0]
        more = f" (and {len(hosts) - 1} more)" if len(hosts) > 1 else ""
        raise Forbidden(
            f"{why}{more}; {what} over the API by a non-admin may reach public hosts only; "
            f"use a public host, or {ALLOWED_HOSTS_ADVICE}",
            pipeline=pipeline.name,
            task=task,
            field=field,
        )
    sensors = task_sensor_problems(store, pipeline, confine.identity, params)
    if sensors:
        task_id, field, why = sensors[0]
        raise Forbidden(why, pipeline=pipeline.name, task=task_id, field=field)
