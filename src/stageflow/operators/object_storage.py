"""Object storage URLs (``s3://`` and every other fsspec protocol): fresh reads,
whole-object writes, object versions, and errors that say what to fix.

Policy. ``s3://`` (and ``s3a://``) goes through s3fs, the ``s3`` extra
(``pip install 'stageflow[s3]'``), imported when such a URL is first used. Its
endpoint and credentials come from the environment of the process that opens the
URL (a task's process sees its own), read at each use so that a process serving
several configurations never holds on to an old one:

* endpoint: ``STAGEFLOW_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3`` or
  ``AWS_ENDPOINT_URL``, else seed 001's ``MINIO_ENDPOINT`` (``host:port``, spoken
  to over ``http://`` unless it carries a scheme); none: AWS itself;
* credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
  ``AWS_SESSION_TOKEN``), else ``MINIO_ACCESS_KEY`` / ``MINIO_SECRET_KEY``, else
  whatever botocore finds (``AWS_PROFILE``, the shared credentials file, an
  instance role);
* region: ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (botocore reads them).

Credentials are handed to s3fs only: never logged, never part of a message,
a cache key or a record (only the URL and the endpoint are shown).

Filesystems cache directory listings (an object schedule lists a prefix, and a
long-lived worker keeps the listing), so every read, stat, listing and version
here drops the cached entries of its path (for a glob: of its fixed prefix and
everything below) first: a key computed from an object's ETag, the bytes then
read, and the objects a schedule or a sensor sees at each poll are the store's
as it is now, not as this process first listed it.

``http(s)://`` URLs follow no redirect from a public host to a non-public one
(``operators.addresses``), as every other http request made for a task. Other
protocols (``gs://``, ``memory://`` ...) pass through unchanged; a missing
driver names the package to install. Local paths are not handled here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from stageflow.errors import MissingExtra, ObjectStorageError

__all__ = [
    "ENDPOINT_VARIABLES",
    "endpoint_url",
    "filesystem",
    "glob",
    "is_s3",
    "object_info",
    "object_version",
    "read_bytes",
    "storage_options",
    "write_bytes",
]

#: Where the S3 endpoint is read from, first set wins (the module doc).
ENDPOINT_VARIABLES = (
    "STAGEFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "MINIO_ENDPOINT",
)
#: Fields of fsspec's ``info()`` that change when the object changes.
VERSION_FIELDS = (
    "ETag",
    "etag",
    "md5Hash",
    "md5",
    "version_id",
    "VersionId",
    "generation",
    "LastModified",
    "last_modified",
    "mtime",
    "updated",
    "created",
    "size",
)
_S3 = ("s3", "s3a")


def is_s3(url: str) -> bool:
    return url.split("://", 1)[0].lower() in _S3 if "://" in url else False


def endpoint_url(env: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint the environment names (``None``: AWS's own)."""
    env = os.environ if env is None else env
    for name in ENDPOINT_VARIABLES:
        value = (env.get(name) or "").strip()
        if value:
            return value if "://" in value else f"http://{value}"
    return None


def storage_options(url: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The keyword arguments for ``url``'s filesystem (the module doc): for ``s3://``
    its endpoint and credentials; for ``http(s)://`` redirects checked at each hop
    (``addresses.checked_redirects``: none from a public host to the server's own
    network); empty for the rest."""
    if url[:8].lower().startswith(("http://", "https://")):
        from stageflow.operators.addresses import checked_redirects

        return {"client_kwargs": {"trace_configs": [checked_redirects()]}}
    if not is_s3(url):
        return {}
    env = os.environ if env is None else env
    options: dict[str, Any] = {}
    endpoint = endpoint_url(env)
    if endpoint is not None:
        options["endpoint_url"] = endpoint
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        key, secret = env.get("MINIO_ACCESS_KEY"), env.get("MINIO_SECRET_KEY")
    if key and secret:
        options["key"], options["secret"] = key, secret
        token = env.get("AWS_SESSION_TOKEN")
        if token:
            options["token"] = token
    return options


def filesystem(url: str, what: str = "") -> tuple[Any, str]:
    """``url``'s fsspec filesystem (configured as the module doc says) and its path in it.

    Raises ``MissingExtra`` when the protocol's package is not installed, and
    ``ObjectStorageError`` for a protocol fsspec does not know; ``what`` (e.g.
    ``task 'ingest', field 'source'``) starts their messages."""
    import fsspec  # a core dependency, imported on first use for a fast start

    protocol = url.split("://", 1)[0].lower()
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        fix = "pip install 'stageflow[s3]'" if protocol in _S3 else _package_hint(protocol)
        raise MissingExtra(
            f"{_where(what)}{_shown(url)}: {protocol}:// needs a package that is not "
            f"installed: {fix}"
        ) from None
    except ValueError:
        raise ObjectStorageError(
            f"{_where(what)}{_shown(url)}: no filesystem knows the protocol {protocol!r}; "
            "use s3://, gs://, file://, memory:// or another fsspec protocol"
        ) from None
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, str(path)


def read_bytes(url: str, what: str = "") -> bytes:
    """The bytes of the object at ``url`` as it is now; ``ObjectStorageError`` says
    why they cannot be had (``MissingExtra`` for a missing package)."""
    fs, path = filesystem(url, what)
    try:
        fs.invalidate_cache(path)
        return bytes(fs.cat_file(path))
    except Exception as exc:  # each filesystem raises its own types
        raise _error(exc, url, "read", what) from None


def write_bytes(url: str, data: bytes, what: str = "") -> None:
    """Put ``data`` at ``url`` as one object (visible whole or not at all)."""
    fs, path = filesystem(url, what)
    try:
        fs.pipe_file(path, data)
    except Exception as exc:  # each filesystem raises its own types
        raise _error(exc, url, "write", what) from None
    finally:
        fs.invalidate_cache(path)


def glob(url: str, what: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The objects matching ``url`` (a glob: ``s3://bucket/in/*.csv``) now: (full
    URL, the filesystem's info), by URL, directories left out. ``ObjectStorageError``
    says why the listing cannot be had (``MissingExtra`` for a missing package), also
    when nothing matches because an ``s3://`` URL's bucket does not exist (s3fs lists a
    missing bucket as empty: a misspelt one would look like "nothing yet" forever)."""
    fs, path = filesystem(url, what)
    try:
        _forget_listings(fs, path)
        found: dict[str, Any] = fs.glob(path, detail=True)
        if not found and is_s3(url):  # one more request, only when nothing matched
            bucket = path.split("/", 1)[0]
            if not fs.exists(bucket):
                raise FileNotFoundError(f"no bucket {bucket}")
    except Exception as exc:  # each filesystem raises its own types
        raise _error(exc, url, "list", what) from None
    return [
        (fs.unstrip_protocol(name), dict(info))
        for name, info in sorted(found.items())
        if info.get("type") != "directory"
    ]


def object_info(url: str, what: str = "") -> dict[str, Any] | None:
    """The filesystem's info on the object at ``url`` as it is now (size, ETag, last
    modified ...); ``None`` when there is no such object. ``ObjectStorageError`` says
    why it cannot be had (``MissingExtra`` for a missing package)."""
    fs, path = filesystem(url, what)
    try:
        fs.invalidate_cache(path)
        return dict(fs.info(path))
    except FileNotFoundError:
        return None
    except Exception as exc:  # each filesystem raises its own types
        raise _error(exc, url, "read", what) from None


def object_version(url: str) -> list[list[str]]:
    """The version fields (``VERSION_FIELDS``: ETag, generation, last modified,
    size) that ``url``'s filesystem reports for it now; empty when it cannot tell
    (no such object, no driver, the endpoint unreachable)."""
    try:
        fs, path = filesystem(url)
        fs.invalidate_cache(path)
        info = fs.info(path)
    except Exception:  # unreachable, no such object, or no driver: no version known
        return []
    return [[key, str(info[key])] for key in VERSION_FIELDS if info.get(key) is not None]


def _error(exc: BaseException, url: str, verb: str, what: str) -> ObjectStorageError:
    """A one-line ``ObjectStorageError`` for a failed ``verb`` (read/write/list) of ``url``."""
    where = f"{_where(what)}cannot {verb} {_shown(url)}"
    text = _line(exc)
    endpoint = endpoint_url() if is_s3(url) else None
    at = f" at {endpoint}" if endpoint else ""
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    if isinstance(exc, FileNotFoundError):
        if is_s3(url) and ("bucket" in text.lower() or verb == "write"):
            return ObjectStorageError(
                f"{where}: there is no bucket {bucket!r}{at}; create it, or name an existing one"
            )
        # as for a local file: it may yet be written (retries may wait for it)
        return ObjectStorageError(f"{where}: no such object", retryable=True)
    if isinstance(exc, PermissionError):
        return ObjectStorageError(
            f"{where}: access denied{at} ({text}); check the credentials "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or MINIO_ACCESS_KEY / MINIO_SECRET_KEY) "
            f"and their rights on bucket {bucket!r}"
        )
    unreachable = isinstance(exc, TimeoutError | ConnectionError) or "connect" in text.lower()
    return ObjectStorageError(  # may be the moment's: retried as the task's policy says
        f"{where}{at}: {type(exc).__name__}: {text}"
        + ("; is the endpoint up? (STAGEFLOW_S3_ENDPOINT_URL)" if unreachable and at else ""),
        retryable=True,
    )


def _forget_listings(fs: Any, path: str) -> None:
    """Drop ``fs``'s cached listings that a glob of ``path`` would use: its fixed
    prefix (up to the first wildcard), that prefix's parents and everything below it."""
    wildcards = [i for i in (path.find(c) for c in "*?[") if i >= 0]
    prefix = path[: min(wildcards)] if wildcards else path
    fs.invalidate_cache(prefix)  # the prefix and its parents
    cache = getattr(fs, "dircache", None)
    if cache is not None:
        for key in [k for k in list(cache) if str(k).startswith(prefix)]:
            cache.pop(key, None)


def _shown(url: str) -> str:
    """``url`` without a password it may carry (``proto://user:secret@...``)."""
    scheme, rest = url.split("://", 1)
    netloc, sep, path = rest.partition("/")
    if "@" in netloc and ":" in netloc.split("@", 1)[0]:
        netloc = netloc.split(":", 1)[0] + ":***@" + netloc.split("@", 1)[1]
    return f"{scheme}://{netloc}{sep}{path}"


def _package_hint(protocol: str) -> str:
    packages = {"gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
    package = packages.get(protocol)
    return f"pip install {package}" if package else f"install fsspec's driver for {protocol}://"


def _where(what: str) -> str:
    return f"{what}: " if what else ""


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
