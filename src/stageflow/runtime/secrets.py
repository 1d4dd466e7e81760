"""Secrets: ``${secret:NAME}`` in a task's parameters, resolved when its attempt starts.

Policy. A spec names a secret, never holds it: ``${secret:NAME}`` stays as written in
the stored spec, the run's record and every answer about them. When an attempt starts,
in the process that runs it (a worker, never the API), each reference is replaced by
the secret's value: from ``STAGEFLOW_SECRETS_FILE`` when it names one (a JSON object
of names to strings, or ``NAME=value`` lines), else from the environment variable
``NAME``. A secret that is set nowhere fails the attempt with a message naming it and
where to set it (it is not retried: nothing will set it meanwhile).

Every value resolved is remembered by the process (``known``), and ``mask`` replaces
each one with ``***``: the task's captured output (``runtime.logs``, and the ``bash``
operator's, which then goes through a pipe instead of straight to the file), the
attempt's error and traceback (so the events and the stored errors) never hold one.
Values shorter than ``MIN_MASKED`` characters are resolved but not masked (masking
``1`` or ``ab`` everywhere would garble every log). What a task returns is stored as
its output, secret or not: returning a secret is the task's choice.

State: the values resolved so far, and the secrets file's contents by its mtime.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_MASKED",
    "SECRET_REF",
    "MissingSecret",
    "active",
    "known",
    "mask",
    "resolve",
    "uses_secrets",
]

#: ``${secret:NAME}``: NAME as an environment variable's name.
SECRET_REF = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")
MIN_MASKED = 4
MASK = "***"

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_file_cache: dict[str, tuple[float, dict[str, str]]] = {}


class MissingSecret(Exception):
    """A ``${secret:NAME}`` that is set nowhere."""


def active() -> bool:
    """Whether this process has a secret to mask (one cheap read, per attempt)."""
    return _pattern is not None


def known() -> tuple[str, ...]:
    """The values this process has resolved (and masks)."""
    with _lock:
        return tuple(_known)


def mask(text: str) -> str:
    """``text`` with every secret this process resolved replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def resolve(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """``value`` (a task's parameters) with every ``${secret:NAME}`` replaced by its
    value (recursively in lists and dicts); ``MissingSecret`` names one set nowhere."""
    if isinstance(value, str):
        if "${secret:" not in value:
            return value
        return SECRET_REF.sub(lambda m: _value(m.group(1), env), value)
    if isinstance(value, dict):
        return {k: resolve(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, env) for v in value]
    return value


def uses_secrets(value: Any) -> bool:
    if isinstance(value, str):
        return "${secret:" in value
    if isinstance(value, dict):
        return any(uses_secrets(v) for v in value.values())
    if isinstance(value, list):
        return any(uses_secrets(v) for v in value)
    return False


def _value(name: str, env: Mapping[str, str] | None) -> str:
    env = os.environ if env is None else env
    path = env.get("STAGEFLOW_SECRETS_FILE")
    found: str | None = None
    if path:
        found = _from_file(path).get(name)
    if found is None:
        found = env.get(name)
    if found is None:
        where = f"STAGEFLOW_SECRETS_FILE ({path})" if path else "STAGEFLOW_SECRETS_FILE"
        raise MissingSecret(
            f"secret '{name}' is not set: export {name} in the environment of the process "
            f"that runs the task (a worker), or add it to {where}"
        )
    _remember(found)
    return found


def _remember(value: str) -> None:
    global _pattern
    if len(value) < MIN_MASKED:
        return
    with _lock:
        if value in _known:
            return
        _known.add(value)
        # Longest first: a secret containing another is masked whole.
        ordered = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def _from_file(path: str) -> dict[str, str]:
    """The secrets file: a JSON object, or ``NAME=value`` lines (``#`` comments);
    re-read when it changes."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        raise MissingSecret(
            f"STAGEFLOW_SECRETS_FILE {path} cannot be read: {exc.strerror or exc}"
        ) from None
    cached = _file_cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    text = Path(path).read_text(encoding="utf-8")
    values: dict[str, str] = {}
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MissingSecret(f"STAGEFLOW_SECRETS_FILE {path} is not valid JSON: {exc}") from None
        values = {str(k): str(v) for k, v in data.items()}
    else:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, val = line.partition("=")
            values[key.strip()] = val.strip()
    _file_cache[path] = (mtime, values)
    return values
