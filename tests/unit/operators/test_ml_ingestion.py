"""data_ingestion on real sources: bundled and generated datasets, files in every
format, memory:// through fsspec, a local HTTP server, SQLite; and its failures."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from stageflow.operators.base import TaskFailed
from stageflow.operators.metadata import sha256_file
from stageflow.operators.ml.ingestion import DataIngestion, IngestionParams
from support.ml import closed_port, file_server, make_ctx, metadata

FRAME = pd.DataFrame(
    {"amount": [10.5, 3.0, 7.25, 99.0], "country": ["FR", "DE", "FR", "ES"], "label": [0, 1, 0, 1]}
)


def ingest(tmp_path: Path, inputs: dict[str, Any] | None = None, **params: Any) -> Any:
    ctx = make_ctx(tmp_path, "ingest")
    return DataIngestion().run(IngestionParams.model_validate(params), inputs or {}, ctx), ctx


@pytest.mark.parametrize(
    ("name", "rows", "columns"),
    [
        pytest.param("iris", 150, 5, id="iris"),
        pytest.param("wine", 178, 14, id="wine"),
        pytest.param("breast_cancer", 569, 31, id="breast_cancer"),
        pytest.param("diabetes", 442, 11, id="diabetes"),
    ],
)
def test_bundled_datasets_load_with_a_target_column(
    tmp_path: Path, name: str, rows: int, columns: int
) -> None:
    frame, ctx = ingest(tmp_path, source=f"sklearn:{name}")
    assert frame.shape == (rows, columns)
    assert "target" in frame.columns
    meta = metadata(ctx)
    assert meta["info"]["rows"] == rows
    assert meta["reads"][0]["uri"] == f"sklearn:{name}"
    assert len(meta["reads"][0]["sha256"]) == 64


def test_a_generator_takes_options_and_the_seed(tmp_path: Path) -> None:
    options = {"n_samples": 300, "n_features": 6, "weights": [0.9, 0.1]}
    a, _ = ingest(tmp_path, source="sklearn:make_classification", options=options, seed=3)
    b, _ = ingest(tmp_path, source="sklearn:make_classification", options=options, seed=3)
    c, _ = ingest(tmp_path, source="sklearn:make_classification", options=options, seed=4)
    assert list(a.columns) == [*(f"feature_{i}" for i in range(6)), "target"]
    assert len(a) == 300 and a["target"].mean() < 0.2
    assert a.equals(b) and not a.equals(c)


@pytest.mark.parametrize(
    ("suffix", "write"),
    [
        pytest.param(".csv", lambda f, p: f.to_csv(p, index=False), id="csv"),
        pytest.param(".csv.gz", lambda f, p: f.to_csv(p, index=False), id="csv-gzip"),
        pytest.param(".json", lambda f, p: f.to_json(p, orient="records"), id="json"),
        pytest.param(".jsonl", lambda f, p: f.to_json(p, orient="records", lines=True), id="jsonl"),
        pytest.param(".parquet", lambda f, p: f.to_parquet(p), id="parquet"),
    ],
)
def test_files_in_each_format_read_back_equal(tmp_path: Path, suffix: str, write: Any) -> None:
    path = tmp_path / f"data{suffix}"
    write(FRAME, path)
    frame, ctx = ingest(tmp_path, source=str(path))
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), FRAME, check_dtype=False)
    read = metadata(ctx)["reads"][0]
    assert read == {"uri": str(path), "sha256": sha256_file(path), "kind": "file"}


def test_columns_sample_and_limit(tmp_path: Path) -> None:
    frame, _ = ingest(tmp_path, source="sklearn:iris", columns=["sepal length (cm)", "target"])
    assert list(frame.columns) == ["sepal length (cm)", "target"]
    sampled, _ = ingest(tmp_path, source="sklearn:iris", sample=0.2, seed=1)
    again, _ = ingest(tmp_path, source="sklearn:iris", sample=0.2, seed=1)
    assert len(sampled) == 30 and sampled.index.equals(again.index)
    counted, _ = ingest(tmp_path, source="sklearn:iris", sample=12, limit=5)
    assert len(counted) == 5


def test_memory_filesystem_read_and_write(tmp_path: Path) -> None:
    import fsspec

    with fsspec.open("memory://stageflow-test/in.parquet", "wb") as f:
        FRAME.to_parquet(f)
    frame, ctx = ingest(
        tmp_path, source="memory://stageflow-test/in.parquet", to="memory://stageflow-test/out.csv"
    )
    assert len(frame) == 4
    with fsspec.open("memory://stageflow-test/out.csv", "rb") as f:
        out = pd.read_csv(f)
    assert out["amount"].tolist() == FRAME["amount"].tolist()
    assert metadata(ctx)["writes"][0]["uri"] == "memory://stageflow-test/out.csv"


def test_http_source_from_a_local_server(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    FRAME.to_csv(tmp_path / "site" / "data.csv", index=False)
    with file_server(tmp_path / "site") as base:
        frame, ctx = ingest(tmp_path, source=f"{base}/data.csv")
        with pytest.raises(TaskFailed, match=r"answered HTTP 404"):
            ingest(tmp_path, source=f"{base}/missing.csv")
    assert frame["country"].tolist() == ["FR", "DE", "FR", "ES"]
    assert metadata(ctx)["reads"][0]["kind"] == "http"


def test_sqlite_query_and_table_and_writing(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    with sqlite3.connect(db) as conn:
        FRAME.to_sql("payments", conn, index=False)
    url = f"sqlite:///{db}"
    frame, ctx = ingest(tmp_path, source=url, query="SELECT * FROM payments WHERE amount > 5")
    assert sorted(frame["amount"]) == [7.25, 10.5, 99.0]
    whole, _ = ingest(tmp_path, source=url, table="payments")
    assert len(whole) == 4
    assert metadata(ctx)["reads"][0]["kind"] == "database"
    warehouse = tmp_path / "wh" / "warehouse.db"
    ingest(tmp_path, inputs={"x": frame}, to=f"sqlite:///{warehouse}", table="big")
    with sqlite3.connect(warehouse) as conn:
        assert conn.execute("SELECT COUNT(*) FROM big").fetchone() == (3,)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"source": "nope.csv"}, r"no such file: /\S*/nope\.csv", id="missing-file"),
        pytest.param({"source": "{tmp}/data.xyz"}, r"cannot tell the format", id="unknown-format"),
        pytest.param(
            {"source": "sklearn:iris", "columns": ["petal", "target"]},
            r"missing column 'petal'; the data has: sepal length",
            id="missing-column",
        ),
        pytest.param(
            {"source": "http://127.0.0.1:{port}/x.csv"}, r"cannot reach", id="unreachable"
        ),
        pytest.param(
            {"source": "sqlite:///{tmp}/absent.db", "table": "t"},
            r"no SQLite database at",
            id="no-database",
        ),
        pytest.param(
            {"source": "sqlite:///{tmp}/source.db", "query": "SELECT * FROM absent"},
            r"query failed.*no such table: absent",
            id="bad-query",
        ),
        pytest.param(
            {"source": "sklearn:iris", "source_type": "database"},
            r"source_type is 'database'",
            id="wrong-source-type",
        ),
    ],
)
def test_failures_are_one_clear_line(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    (tmp_path / "data.xyz").write_text("a,b\n1,2\n")
    sqlite3.connect(tmp_path / "source.db").close()
    params = {
        k: v.format(port=closed_port(), tmp=tmp_path) if isinstance(v, str) else v
        for k, v in params.items()
    }
    with pytest.raises(TaskFailed, match=message) as info:
        ingest(tmp_path, **params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"source": "sklearn:titanic"}, "unknown scikit-learn dataset", id="dataset"),
        pytest.param({"source": "sqlite:///x.db"}, "needs `query`", id="sql-without-query"),
        pytest.param({"to": "sqlite:///x.db"}, "needs `table`", id="sql-write-without-table"),
        pytest.param({}, "give `source`", id="nothing"),
        pytest.param({"source": "a.csv", "sample": 0}, "greater than 0", id="sample"),
        pytest.param({"source": "a.csv", "tabel": "x"}, "Extra inputs", id="typo"),
    ],
)
def test_bad_parameters_are_refused_before_running(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IngestionParams.model_validate(params)


def test_seed_001_spellings_are_accepted() -> None:
    params = IngestionParams.model_validate(
        {"source_type": "local", "source_path": "in.csv", "output_path": "out.parquet"}
    )
    assert (params.source, params.to) == ("in.csv", "out.parquet")
    assert IngestionParams.model_validate({"destination": "out.csv"}).to == "out.csv"
