"""The service's tables in SQL (schema 11): API tokens and the audit log.

``AccessTables`` is a part of ``SqlStore`` (it inherits it), kept apart because these
tables serve the API's access control, not runs: a token row holds the sha256 of its
secret, never the secret; the audit log is append-only. Literal strings only: no
value is ever formatted into SQL.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.runtime.store.base import AuditEntry, TokenRecord

if TYPE_CHECKING:
    from stageflow.runtime.store.dialect import Cursor, Dialect

__all__ = ["AccessTables"]

_CREDENTIAL_COLUMNS = (
    "token_id, name, role, owner, secret_sha256, created_at, expires_at, revoked_at, last_used_at"
)
_AUDIT_COLUMNS = "at, actor, action, status, role, owner, target, client, detail, id"


@dataclass(frozen=True, slots=True)
class _AccessStatements:
    insert_token: str
    select_token: str
    select_tokens: str
    revoke_token: str
    touch_token: str
    insert_audit: str


@functools.cache
def _statements(dialect: Dialect) -> _AccessStatements:
    q = dialect.sql
    return _AccessStatements(
        insert_token=q(
            f"INSERT INTO api_tokens ({_CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        ),
        select_token=q(f"SELECT {_CREDENTIAL_COLUMNS} FROM api_tokens WHERE token_id = ?"),  # noqa: S608
        select_tokens=q(f"SELECT {_CREDENTIAL_COLUMNS} FROM api_tokens ORDER BY created_at, name"),  # noqa: S608
        revoke_token=q(
            "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL"
        ),
        touch_token=q("UPDATE api_tokens SET last_used_at = ? WHERE token_id = ?"),
        insert_audit=q(
            "INSERT INTO audit_log (at, actor, action, status, role, owner, target, client, "
            "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
        ),
    )


@functools.lru_cache(maxsize=16)
def _audit_sql(dialect: Dialect, since: bool, actor: bool, before: bool) -> str:
    where = []
    if since:
        where.append("at >= ?")
    if actor:
        where.append("actor = ?")
    if before:
        where.append("id < ?")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return dialect.sql(
        f"SELECT {_AUDIT_COLUMNS} FROM audit_log {clause}ORDER BY id DESC LIMIT ?"  # noqa: S608
    )


class AccessTables:
    """Tokens and the audit log (``Store`` methods; see the protocol's docstrings)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...

        def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any: ...

        def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

    def add_token(self, token: TokenRecord) -> None:
        """Store a new token; the driver's integrity error when its id or name exists."""
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).insert_token,
                (
                    token.token_id,
                    token.name,
                    token.role,
                    token.owner,
                    token.secret_sha256,
                    token.created_at,
                    token.expires_at,
                    token.revoked_at,
                    token.last_used_at,
                ),
            )

    def get_token(self, token_id: str) -> TokenRecord | None:
        """The token with that public id, revoked or not; ``None`` when there is none."""
        row = self._fetchone(_statements(self.dialect).select_token, (token_id,))
        return None if row is None else TokenRecord(*row)

    def tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        rows = self._fetchall(_statements(self.dialect).select_tokens, ())
        return [TokenRecord(*row) for row in rows]

    def revoke_token(self, name: str, now: float) -> bool:
        """Revoke the live token named ``name``; False when there is none."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).revoke_token, (now, name))
            return bool(cur.rowcount)

    def touch_token(self, token_id: str, now: float) -> None:
        """Record that the token was used at ``now``."""
        with self._transaction() as cur:
            cur.execute(_statements(self.dialect).touch_token, (now, token_id))

    def add_audit(self, entry: AuditEntry) -> int:
        """Append ``entry`` to the audit log; return its id."""
        with self._transaction() as cur:
            cur.execute(
                _statements(self.dialect).insert_audit,
                (
                    entry.at,
                    entry.actor,
                    entry.action,
                    entry.status,
                    entry.role,
                    entry.owner,
                    entry.target,
                    entry.client,
                    entry.detail,
                ),
            )
            return int(cur.fetchone()[0])

    def audit_entries(
        self,
        *,
        since: float | None = None,
        actor: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The audit log, newest first, matching every filter given; ``before_id``:
        the page starts after that entry."""
        params = [p for p in (since, actor, before_id) if p is not None]
        sql = _audit_sql(self.dialect, since is not None, actor is not None, before_id is not None)
        return [AuditEntry(*row) for row in self._fetchall(sql, (*params, limit))]
