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
created with ``catchup``. fsspec is imported here only, when a URL is listed.
"""

from __future__ import annotations

from typing import Any

from stageflow.errors import UsageError
from stageflow.runtime.store.sql_run_retries import object_key

__all__ = ["check_object_url", "list_objects"]

#: At most this many objects per listing (a glob matching more is narrowed by its writer).
MAX_OBJECTS = 10_000


def check_object_url(url: str, field: str = "on_object") -> None:
    """``UsageError`` naming ``field`` when fsspec knows no filesystem for ``url``'s
    protocol, or the package that serves it is missing (``pip install s3fs``)."""
    import fsspec

    protocol = url.split("://", 1)[0]
    option = "--on-object" if field == "on_object" else field
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise UsageError(
            f"{option} {url}: fsspec knows no protocol {protocol!r}; use file://, s3://, "
            "gs://, memory:// or another fsspec protocol",
            field=field,
        ) from None
    except ImportError as exc:
        raise UsageError(
            f"{option} {url}: protocol {protocol!r} needs a package that is not installed "
            f"({exc}); install it (e.g. pip install s3fs for s3://)",
            field=field,
        ) from None


def list_objects(url: str) -> list[tuple[str, str]]:
    """The files under ``url`` (an fsspec URL with a glob): (object URL, object key),
    by URL; directories are left out. Raises what the filesystem raises (``OSError``
    for an unreachable bucket)."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url)
    found: dict[str, Any] = fs.glob(path, detail=True)
    objects = []
    for name, info in sorted(found.items())[:MAX_OBJECTS]:
        if info.get("type") == "directory":
            continue
        full = fs.unstrip_protocol(name)
        objects.append((full, object_key(full, _identity(info))))
    return objects


def _identity(info: dict[str, Any]) -> str:
    """The version of an object its listing gives: etag, else modification time, else size."""
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is not None:
            return f"{key}={value}"
    return f"size={info.get('size')}"
