"""Object schedules: the objects under an fsspec URL, listed (``kind: object``).

An object schedule (``schedules add NAME PIPELINE --on-object 'file:///in/*.csv'``)
lists its URL, a glob on any fsspec filesystem (``file://``, ``s3://`` with s3fs
installed, ...), every ``poll`` seconds from the schedule loop. An object is its URL
and its version's identity (the etag when the filesystem gives one, else its
modification time, else its size), so an object written again is new again. Each new
object fires one run, exactly once however many loops list it: the run is created
with a ``schedule_objects`` row keyed by (schedule, object) in one transaction
(``Store.create_run(schedule_object=...)``), and the object's URL reaches its tasks
as ``${schedule.object}`` and ``STAGEFLOW_SCHEDULE_OBJECT``. The objects present when
the schedule is created are recorded without a run and never fire, unless it is
created with ``catchup``. URLs are opened and listed by ``operators.object_storage``
(``s3://`` with its endpoint and credentials from the environment of the process
that lists: the scheduler's), afresh at every poll: a listing the process cached
at an earlier poll never hides a new object.
"""

from __future__ import annotations

from typing import Any

from stageflow.errors import MissingExtra, ObjectStorageError, UsageError
from stageflow.operators import object_storage
from stageflow.runtime.store.sql_run_retries import object_key

__all__ = ["check_object_url", "list_objects"]

#: At most this many objects per listing (a glob matching more is narrowed by its writer).
MAX_OBJECTS = 10_000


def check_object_url(url: str, field: str = "on_object") -> None:
    """``UsageError`` naming ``field`` when no filesystem knows ``url``'s protocol,
    or the package that serves it is missing (``pip install 'stageflow[s3]'``)."""
    option = "--on-object" if field == "on_object" else field
    try:
        object_storage.filesystem(url, option)
    except (MissingExtra, ObjectStorageError) as exc:
        raise UsageError(str(exc), field=field) from None


def list_objects(url: str) -> list[tuple[str, str]]:
    """The files under ``url`` (a URL with a glob) as they are now: (object URL,
    object key), by URL; directories are left out. Raises ``ObjectStorageError``
    (an unreachable endpoint, refused credentials) or ``MissingExtra``."""
    return [
        (full, object_key(full, _identity(info)))
        for full, info in object_storage.glob(url)[:MAX_OBJECTS]
    ]


def _identity(info: dict[str, Any]) -> str:
    """The version of an object its listing gives: etag, else modification time, else size."""
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is not None:
            return f"{key}={value}"
    return f"size={info.get('size')}"
