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

The audit log keeps every mutating request and control action: who, what, when,
from where, the outcome (an HTTP status).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
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
    "CreatedToken",
    "Identity",
    "TokenInfo",
    "audit_log",
    "authenticate",
    "check_object_path",
    "check_run_paths",
    "code_tasks",
    "confinement",
    "create_token",
    "data_roots",
    "list_tokens",
    "may",
    "path_problems",
    "record_audit",
    "revoke_token",
    "sees",
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


def confinement(settings: Settings, identity: Identity) -> tuple[str, ...] | None:
    """The data roots ``identity``'s specs and runs are confined to; ``None`` for an
    admin (not confined). What the API passes as ``confine`` to the operations that
    create runs (``submit_saved``, ``requeue_retry``, ``trigger_schedule``,
    ``fire_event``, ``add_schedule``, ``check_spec_schedules``)."""
    return None if identity.is_admin else data_roots(settings)


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

    from stageflow.runtime.plan import declared_values
    from stageflow.spec.params import references, substitute

    out: list[tuple[str, str, str]] = []
    real_roots = [os.path.realpath(r) for r in roots]
    values = {**declared_values(pipeline), **(params or {})}

    def check(task: str, field: str, value: str, raw: object) -> None:
        names = list(dict.fromkeys(references(raw))) if isinstance(raw, str) else []
        came = (
            f" (from run parameter{'s' if len(names) > 1 else ''} "
            f"{', '.join(repr(n) for n in names)})"
            if names
            else ""
        )
        why = _path_problem(value, roots, real_roots, came)
        if why is not None:
            out.append((task, field, why))

    def walk(task: str, prefix: str, value: object, raw: object, key: str, path: bool) -> None:
        # ``raw``: the same place before substitution (a whole ``${params.x}`` may have
        # become a list or a mapping: its items keep the text they came from).
        path = path or key in PATH_KEYS or key.endswith(_PATH_ENDINGS)
        if isinstance(value, dict):
            for k, v in value.items():
                inner = raw.get(k, raw) if isinstance(raw, dict) else raw
                walk(task, f"{prefix}.{k}", v, inner, str(k), path)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                inner = raw[i] if isinstance(raw, list) and i < len(raw) else raw
                walk(task, f"{prefix}.{i}", v, inner, key, path)
        elif isinstance(value, str) and path:
            check(task, prefix, value, raw)

    for t in pipeline.tasks:
        try:
            given = substitute(dict(t.parameters), values) if t.parameters else {}
        except KeyError:  # an undeclared parameter: validation names it
            given = t.parameters
        walk(t.id, "parameters", given, t.parameters, "", False)
    return out


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
    url: str, confine: tuple[str, ...] | None, *, field: str, where: str | None = None
) -> None:
    """``Forbidden`` naming ``field`` when ``url`` (an object schedule's: the files it
    lists become its runs' ``${schedule.object}``) is a local path outside ``confine``;
    nothing for a remote URL or when ``confine`` is ``None`` (an admin). ``where``: what
    the message calls it (default: ``field``)."""
    import os

    if confine is None:
        return
    why = _path_problem(url, confine, [os.path.realpath(r) for r in confine])
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
