"""Where ``s3://`` URLs take their endpoint and credentials from (the environment)."""

from __future__ import annotations

import pytest

from stageflow.errors import ObjectStorageError
from stageflow.operators.object_storage import endpoint_url, filesystem, storage_options

AWS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret"}
MINIO = {
    "MINIO_ENDPOINT": "minio.local:9000",
    "MINIO_ACCESS_KEY": "minioadmin",
    "MINIO_SECRET_KEY": "minio-secret",
}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, None, id="aws-itself"),
        pytest.param({"MINIO_ENDPOINT": "minio.local:9000"}, "http://minio.local:9000", id="minio"),
        pytest.param(
            {"MINIO_ENDPOINT": "https://minio.example.com"},
            "https://minio.example.com",
            id="minio-with-scheme",
        ),
        pytest.param(
            {"AWS_ENDPOINT_URL": "http://a:1", "MINIO_ENDPOINT": "b:2"}, "http://a:1", id="aws-wins"
        ),
        pytest.param(
            {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://s3:1"},
            "http://s3:1",
            id="s3-specific",
        ),
        pytest.param(
            {"STAGEFLOW_S3_ENDPOINT_URL": "http://sf:1", "AWS_ENDPOINT_URL_S3": "http://s3:1"},
            "http://sf:1",
            id="stageflow-first",
        ),
        pytest.param({"AWS_ENDPOINT_URL": "  "}, None, id="blank-is-unset"),
    ],
)
def test_endpoint_url(env: dict[str, str], expected: str | None) -> None:
    assert endpoint_url(env) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, {}, id="botocore-finds-them"),
        pytest.param(AWS, {"key": "AKIAEXAMPLE", "secret": "aws-secret"}, id="aws"),
        pytest.param(
            {**AWS, "AWS_SESSION_TOKEN": "tok"},
            {"key": "AKIAEXAMPLE", "secret": "aws-secret", "token": "tok"},
            id="session-token",
        ),
        pytest.param(
            MINIO,
            {
                "endpoint_url": "http://minio.local:9000",
                "key": "minioadmin",
                "secret": "minio-secret",
            },
            id="minio",
        ),
        pytest.param(
            {**MINIO, **AWS},
            {
                "endpoint_url": "http://minio.local:9000",
                "key": "AKIAEXAMPLE",
                "secret": "aws-secret",
            },
            id="aws-pair-wins",
        ),
        pytest.param({"AWS_ACCESS_KEY_ID": "only-the-id"}, {}, id="half-a-pair"),
    ],
)
def test_storage_options_of_s3(env: dict[str, str], expected: dict[str, str]) -> None:
    assert storage_options("s3://bucket/key.csv", env) == expected
    assert storage_options("s3a://bucket/key.csv", env) == expected


def test_other_protocols_get_no_options() -> None:
    assert storage_options("memory://x/y.csv", {**AWS, **MINIO}) == {}
    assert storage_options("gs://bucket/y.csv", {**AWS, **MINIO}) == {}


def test_an_unknown_protocol_is_named() -> None:
    with pytest.raises(ObjectStorageError, match="no filesystem knows the protocol 'nosuch'"):
        filesystem("nosuch://bucket/key", "task 'ingest', field 'source'")


def test_glob_gives_full_urls_of_objects_only_and_info_none_when_absent() -> None:
    from stageflow.operators.object_storage import glob, object_info, write_bytes

    root = "memory:///object-storage-glob"  # as memory:// names its objects
    for name in ("in/b.csv", "in/a.csv", "in/notes.txt", "in/sub/c.csv"):
        write_bytes(f"{root}/{name}", b"x")

    found = glob(f"{root}/in/*")

    assert [url for url, _ in found] == [
        f"{root}/in/a.csv",
        f"{root}/in/b.csv",
        f"{root}/in/notes.txt",
    ]  # in/sub is a folder: left out
    assert all(info["size"] == 1 for _, info in found)
    assert glob(f"{root}/none/*.csv") == []
    assert object_info(f"{root}/in/none.csv") is None
    info = object_info(f"{root}/in/a.csv")
    assert info is not None and info["size"] == 1
