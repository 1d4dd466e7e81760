"""The source versions a cache key includes: local files and fsspec objects.

No bucket exists here: fsspec's in-memory filesystem (`memory://`) stands in for
S3/GCS and answers `info()` the same way; a real local HTTP server shows the
`https?://` path.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from stageflow.runtime.cache import file_versions


def test_local_files_by_size_and_mtime(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    first = file_versions({"path": str(data), "other": ["not a file", 3]})
    assert list(first) == [str(data)]
    data.write_text("a\n1\n2\n")
    assert file_versions({"path": str(data)}) != first


def test_fsspec_objects_by_their_version_fields() -> None:
    url = f"memory://bucket-{uuid.uuid4().hex}/data.csv"
    with fsspec.open(url, "wb") as f:
        f.write(b"a\n1\n")
    first = file_versions({"source": url})
    assert first.get(url)
    with fsspec.open(url, "wb") as f:
        f.write(b"a\n1\n2\n")
    assert file_versions({"source": url}) != first
    assert file_versions({"source": "memory://nowhere/missing.csv"}) == {}


@pytest.fixture
def http_url(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "data.csv").write_text("a\n1\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/data.csv"
    finally:
        server.shutdown()


def test_http_objects_report_a_version(http_url: str) -> None:
    versions = file_versions([http_url])
    assert http_url in versions
    assert ["size", "4"] in versions[http_url]
