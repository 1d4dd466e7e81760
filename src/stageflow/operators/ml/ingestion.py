"""The ``data_ingestion`` operator: read a table from anywhere, optionally write it somewhere.

Sources (``source``):

* a local path (a relative one starts at the pipeline's folder:
  ``operators/paths.py``), or any fsspec URL (``s3://``, ``gs://``, ``memory://``, ...;
  ``s3://`` needs the ``s3`` extra and takes its endpoint and credentials from the
  environment: ``operators/object_storage.py``);
  ``http(s)://`` is fetched with the standard library; ``format`` is
  ``csv | json | jsonl | parquet``, inferred from the name when absent
  (``.gz``/``.bz2``/``.xz``/``.zip`` compression too);
* a database URL (SQLAlchemy spelling) with ``query`` or ``table``:
  ``sqlite:///file.db`` (relative to the pipeline's folder, too) needs nothing
  more, other databases need SQLAlchemy;
* ``sklearn:NAME``: a dataset bundled with scikit-learn (``iris``, ``wine``,
  ``breast_cancer``, ``diabetes``, ``digits``) or a generator
  (``make_classification``, ``make_regression``, ``make_blobs``,
  ``make_moons``, ``make_circles``) with its keyword arguments in ``options``;
  the label is the column ``target``;
* no ``source``: the DataFrame of an upstream task (to write it somewhere).

Then ``columns`` (keep these), ``sample`` (a fraction < 1 or a row count,
seeded) and ``limit``. The output is the DataFrame (stored as Parquet); the row
count, schema and the content hash of what was read go to the task's metadata.
With ``to`` the table is also written: a path/URL (format from its suffix) or a
database URL plus ``table`` (seed 001's ``destination: warehouse``).

Example::

    - id: ingest
      operator: data_ingestion
      parameters:
        source: data/transactions.csv      # or s3://bucket/x.parquet, sklearn:wine, ...
        columns: [amount, merchant, is_fraud]
        sample: 0.5
        seed: 7
        to: sqlite:///warehouse.db
        table: transactions
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from stageflow.errors import ObjectStorageError
from stageflow.operators import object_storage
from stageflow.operators.addresses import urlopen
from stageflow.operators.base import TaskContext, TaskFailed
from stageflow.operators.metadata import record, sha256_bytes
from stageflow.operators.ml._common import MLOperator, ensure_columns, is_frame, need, pick

__all__ = [
    "BUNDLED",
    "GENERATORS",
    "DataIngestion",
    "IngestionParams",
    "frame_hash",
    "read_table",
    "write_table",
]

Format = Literal["csv", "json", "jsonl", "parquet"]

BUNDLED = ("iris", "wine", "breast_cancer", "diabetes", "digits")
GENERATORS = ("make_classification", "make_regression", "make_blobs", "make_moons", "make_circles")
_SQL_SCHEMES = {
    "sqlite",
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "mssql",
    "oracle",
    "duckdb",
    "snowflake",
    "redshift",
    "bigquery",
}
_SUFFIX_FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class IngestionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str | None = Field(
        default=None,
        validation_alias=AliasChoices("source", "source_path"),
        description="path (relative: from the pipeline's folder), fsspec/http URL, database "
        "URL or sklearn:NAME; none: the upstream DataFrame (seed 001: source_path)",
    )
    source_type: (
        Literal["local", "s3", "gcs", "http", "api", "database", "sklearn", "memory"] | None
    ) = Field(default=None, description="seed 001's hint; checked against `source` when given")
    query: str | None = Field(default=None, description="SQL for a database source")
    table: str | None = Field(
        default=None, description="table to read (database source) or to write (`to` a database)"
    )
    format: Format | None = Field(default=None, description="file format; default from the suffix")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments for the pandas reader or the sklearn generator",
    )
    columns: list[str] | None = Field(default=None, description="keep only these columns")
    sample: float | None = Field(
        default=None, gt=0, description="a fraction (< 1) or a number of rows, drawn with `seed`"
    )
    limit: int | None = Field(default=None, ge=1, description="at most this many rows")
    seed: int = Field(default=0, description="seed for `sample` and sklearn generators")
    to: str | None = Field(
        default=None,
        validation_alias=AliasChoices("to", "destination", "output_path"),
        description="also write the table here: a path (relative: from the pipeline's "
        "folder)/URL or a database URL with `table`",
    )
    if_exists: Literal["fail", "replace", "append"] = Field(
        default="replace", description="when `to` already holds the table"
    )
    input: str | None = Field(default=None, description="the upstream task to take data from")
    timeout_seconds: float = Field(default=60.0, gt=0, description="network timeout")

    @field_validator("source")
    @classmethod
    def _known_sklearn(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("sklearn:"):
            name = value.removeprefix("sklearn:")
            if name not in BUNDLED + GENERATORS:
                raise ValueError(
                    f"unknown scikit-learn dataset '{name}'; use one of "
                    f"{', '.join(BUNDLED + GENERATORS)}"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> IngestionParams:
        if self.source is not None and is_sql_url(self.source) and not (self.query or self.table):
            raise ValueError("a database source needs `query` (SQL) or `table`")
        if self.to is not None and is_sql_url(self.to) and not self.table:
            raise ValueError("writing to a database needs `table`")
        for name in (self.table,):
            if name is not None and not _TABLE.fullmatch(name):
                raise ValueError(f"table {name!r} is not a plain (schema.)table name")
        if self.source is None and self.to is None:
            raise ValueError("give `source` (what to read) or `to` (where to write upstream data)")
        return self


class DataIngestion(MLOperator):
    """Read a table (file, URL, database, bundled dataset); optionally write it out."""

    name = "data_ingestion"
    Params = IngestionParams

    def execute(self, params: Any, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
        assert isinstance(params, IngestionParams)
        op = self.name
        if params.source is None:
            origin, frame = pick(inputs, params.input, is_frame, "a DataFrame", op)
            reads: list[dict[str, Any]] = [
                {"uri": f"task:{origin}", "sha256": frame_hash(frame), "kind": "upstream"}
            ]
        else:
            _check_source_type(params.source, params.source_type)
            frame, read = read_table(
                ctx.resolve_path(params.source),
                fmt=params.format,
                query=params.query,
                table=params.table,
                options=params.options,
                seed=params.seed,
                timeout=params.timeout_seconds,
                op=op,
            )
            reads = [read]
        if params.columns:
            ensure_columns(frame, params.columns, op)
            frame = frame[params.columns]
        if params.sample is not None:
            frame = _sample(frame, params.sample, params.seed)
        if params.limit is not None:
            frame = frame.head(params.limit)
        schema = {str(c): str(t) for c, t in frame.dtypes.items()}
        record(
            ctx,
            reads=reads,
            metrics={"rows": len(frame), "columns": frame.shape[1]},
            info={"rows": len(frame), "schema": schema},
        )
        print(f"read {len(frame)} rows x {frame.shape[1]} columns from {reads[0]['uri']}")
        if params.to is not None:
            written = write_table(
                frame,
                ctx.resolve_path(params.to),
                table=params.table,
                if_exists=params.if_exists,
                op=op,
            )
            record(ctx, writes=[written])
            print(f"wrote {len(frame)} rows to {written['uri']}")
        return frame


OPERATOR = DataIngestion


# -- reading ----------------------------------------------------------------------


def read_table(
    source: str,
    *,
    fmt: str | None = None,
    query: str | None = None,
    table: str | None = None,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    timeout: float = 60.0,
    op: str = "data_ingestion",
) -> tuple[Any, dict[str, Any]]:
    """The DataFrame at ``source`` and the read's record (uri, sha256, kind).

    Raises ``TaskFailed`` with a one-line reason for anything that cannot be read.
    """
    options = dict(options or {})
    pd = need("pandas", op)
    if source.startswith("sklearn:"):
        frame = _sklearn_frame(source.removeprefix("sklearn:"), options, seed, op)
        return frame, {"uri": source, "sha256": frame_hash(frame), "kind": "dataset"}
    if is_sql_url(source):
        frame = _read_sql(source, query, table, op)
        what = query if query is not None else f"table {table}"
        return frame, {
            "uri": mask(source),
            "query": what,
            "sha256": frame_hash(frame),
            "kind": "database",
        }
    data = fetch_bytes(source, timeout, op)
    fmt = fmt or infer_format(source, op)
    compression = _COMPRESSION.get(_suffixes(source)[1])
    buf = io.BytesIO(data)
    try:
        if fmt == "csv":
            if source.lower().rstrip("/").split("?")[0].endswith((".tsv", ".tsv.gz")):
                options.setdefault("sep", "\t")
            frame = pd.read_csv(buf, compression=compression, **options)
        elif fmt == "json":
            frame = pd.read_json(buf, compression=compression, **options)
        elif fmt == "jsonl":
            frame = pd.read_json(buf, lines=True, compression=compression, **options)
        else:
            frame = pd.read_parquet(buf, **options)
    except TypeError as exc:
        raise TaskFailed(f"{op}: bad `options` for reading {fmt}: {exc}") from None
    except Exception as exc:  # the parsers raise many types; the message is what matters
        raise TaskFailed(
            f"{op}: cannot parse {mask(source)} as {fmt}: {type(exc).__name__}: {_line(exc)}"
        ) from None
    kind = "http" if source.startswith(("http://", "https://")) else "file"
    return frame, {"uri": _display_uri(source), "sha256": sha256_bytes(data), "kind": kind}


def fetch_bytes(source: str, timeout: float, op: str) -> bytes:
    """The bytes at a path or URL; ``TaskFailed`` says why they cannot be had."""
    shown = mask(source)
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"User-Agent": "stageflow"})  # noqa: S310
        try:
            with urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise TaskFailed(f"{op}: {shown} answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise TaskFailed(f"{op}: cannot reach {shown}: {exc.reason}") from None
        except TimeoutError:
            raise TaskFailed(f"{op}: {shown} did not answer within {timeout:g}s") from None
    if "://" not in source or source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise TaskFailed(f"{op}: no such file: {source}") from None
        except IsADirectoryError:
            raise TaskFailed(f"{op}: {source} is a folder; name a file") from None
        except OSError as exc:
            raise TaskFailed(f"{op}: cannot read {source}: {exc.strerror}") from None
    try:  # s3:// and the other fsspec protocols (operators/object_storage.py)
        return object_storage.read_bytes(source)
    except ObjectStorageError as exc:
        raise TaskFailed(f"{op}: {exc}", retryable=exc.retryable) from None


def infer_format(source: str, op: str) -> Format:
    """The format named by ``source``'s suffix; ``TaskFailed`` when it names none."""
    suffix = _suffixes(source)[0]
    fmt = _SUFFIX_FORMATS.get(suffix)
    if fmt is None:
        raise TaskFailed(
            f"{op}: cannot tell the format of {mask(source)} from its name; "
            "set `format:` (csv, json, jsonl or parquet)"
        )
    return fmt


def is_sql_url(value: str) -> bool:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    return scheme.split("+")[0].lower() in _SQL_SCHEMES


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def frame_hash(frame: Any) -> str:
    """A content hash of a DataFrame: its columns and every row (index included)."""
    pd = need("pandas")
    digest = hashlib.sha256(repr([str(c) for c in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def _sklearn_frame(name: str, options: dict[str, Any], seed: int, op: str) -> Any:
    pd = need("pandas", op)
    datasets = need("sklearn.datasets", op)
    if name in BUNDLED:
        try:
            bunch = getattr(datasets, f"load_{name}")(as_frame=True, **options)
        except TypeError as exc:
            raise TaskFailed(f"{op}: bad `options` for sklearn:{name}: {exc}") from None
        frame = bunch.frame
        names = getattr(bunch, "target_names", None)
        if names is not None and pd.api.types.is_integer_dtype(frame.get("target")):
            # The classes' names by column and label (label 0 is malignant), for the
            # evaluation pictures; attrs travel with the frame, through parquet too.
            labels = {str(i): str(n) for i, n in enumerate(names)}
            frame.attrs["class_names"] = {"target": labels}
        return frame
    if name not in GENERATORS:
        raise TaskFailed(
            f"{op}: unknown scikit-learn dataset '{name}'; use {', '.join(BUNDLED + GENERATORS)}"
        )
    options.setdefault("random_state", seed)
    try:
        made = getattr(datasets, name)(**options)
    except (TypeError, ValueError) as exc:
        raise TaskFailed(f"{op}: bad `options` for sklearn:{name}: {exc}") from None
    x, y = made[0], made[1]
    frame = pd.DataFrame(x, columns=[f"feature_{i}" for i in range(x.shape[1])])
    frame["target"] = y
    return frame


def _read_sql(url: str, query: str | None, table: str | None, op: str) -> Any:
    pd = need("pandas", op)
    sql = query if query is not None else f"SELECT * FROM {table}"  # noqa: S608 (table is checked)
    if url.split("://", 1)[0].split("+")[0] == "sqlite":
        path = _sqlite_path(url)
        if path != ":memory:" and not Path(path).is_file():
            raise TaskFailed(f"{op}: no SQLite database at {path}")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return pd.read_sql_query(sql, conn)
        except Exception as exc:  # sqlite3 and pandas raise several types
            raise TaskFailed(f"{op}: query failed on {url}: {_line(exc)}") from None
    sqlalchemy = need("sqlalchemy", f"{op} from {url.split('://')[0]}")
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            return pd.read_sql_query(sqlalchemy.text(sql), conn)
    except Exception as exc:  # drivers raise their own types
        raise TaskFailed(f"{op}: query failed on {mask(url)}: {_line(exc)}") from None


def _sqlite_path(url: str) -> str:
    rest = url.split("://", 1)[1]
    if rest in ("", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


# -- writing ----------------------------------------------------------------------


def write_table(
    frame: Any, to: str, *, table: str | None, if_exists: str, op: str
) -> dict[str, Any]:
    """Write ``frame`` to a path/URL or a database table; return the write's record."""
    if is_sql_url(to):
        if table is None:
            raise TaskFailed(f"{op}: writing to a database needs `table`")
        if to.split("://", 1)[0].split("+")[0] == "sqlite":
            path = _sqlite_path(to)
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                with sqlite3.connect(path) as conn:
                    frame.to_sql(table, conn, if_exists=if_exists, index=False)
            except ValueError as exc:  # if_exists="fail" and the table is there
                raise TaskFailed(f"{op}: cannot write table {table} to {to}: {exc}") from None
        else:
            sqlalchemy = need("sqlalchemy", f"{op} to {to.split('://')[0]}")
            try:
                engine = sqlalchemy.create_engine(to)
                with engine.begin() as conn:
                    frame.to_sql(table, conn, if_exists=if_exists, index=False)
            except Exception as exc:  # drivers raise their own types
                raise TaskFailed(f"{op}: cannot write to {mask(to)}: {_line(exc)}") from None
        return {"uri": f"{mask(to)}#{table}", "sha256": frame_hash(frame), "kind": "table"}
    fmt = infer_format(to, op)
    buf = io.BytesIO()
    if fmt == "csv":
        frame.to_csv(buf, index=False)
    elif fmt == "json":
        frame.to_json(buf, orient="records")
    elif fmt == "jsonl":
        frame.to_json(buf, orient="records", lines=True)
    else:
        frame.to_parquet(buf, index=False)
    data = buf.getvalue()
    if to.startswith(("http://", "https://")):
        raise TaskFailed(f"{op}: cannot write to {mask(to)}: HTTP is read-only here")
    if "://" not in to or to.startswith("file://"):
        target = Path(to.removeprefix("file://")).absolute()
        if if_exists == "fail" and target.exists():
            raise TaskFailed(f"{op}: {target} exists and if_exists is 'fail'")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        uri = str(target)
    else:
        try:  # one whole object (operators/object_storage.py)
            object_storage.write_bytes(to, data)
        except ObjectStorageError as exc:
            raise TaskFailed(f"{op}: {exc}", retryable=exc.retryable) from None
        uri = mask(to)
    return {"uri": uri, "sha256": sha256_bytes(data), "kind": "file"}


# -- helpers ------------------------------------------------------------------------


def _check_source_type(source: str, source_type: str | None) -> None:
    if source_type is None:
        return
    expected = {
        "sklearn": source.startswith("sklearn:"),
        "database": is_sql_url(source),
        "http": source.startswith(("http://", "https://")),
        "api": source.startswith(("http://", "https://")),
        "s3": source.startswith(("s3://", "s3a://")),
        "gcs": source.startswith(("gs://", "gcs://")),
        "memory": source.startswith("memory://"),
        "local": "://" not in source or source.startswith("file://"),
    }
    if not expected[source_type]:
        raise TaskFailed(
            f"data_ingestion: source_type is '{source_type}' but source {mask(source)} is not one"
        )


def _sample(frame: Any, sample: float, seed: int) -> Any:
    if sample < 1:
        return frame.sample(frac=sample, random_state=seed)
    return frame.sample(n=min(int(sample), len(frame)), random_state=seed)


def _suffixes(source: str) -> tuple[str, str]:
    """(format suffix, compression suffix) of a path or URL, lower case."""
    name = urlsplit(source).path if "://" in source else source
    suffixes = [s.lower() for s in Path(name).suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in _COMPRESSION else ""
    if compression:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), compression


def _display_uri(source: str) -> str:
    if "://" not in source:
        return str(Path(source).absolute())
    return mask(source)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
