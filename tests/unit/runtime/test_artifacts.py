"""Where outputs are written (``runtime.artifacts``): a file of its own per attempt."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stageflow.runtime.artifacts import (
    ArtifactStore,
    load_output,
    output_path,
    serialize,
    store_output,
)
from stageflow.runtime.store.base import OutputRef

BIG = list(range(5_000))  # larger than the inline limit below


def store(obj: object, root: Path, attempt: int, *, fallback: bool = False) -> OutputRef:
    return store_output(
        obj,
        run_id="r1",
        task_id="train",
        attempt=attempt,
        artifacts=ArtifactStore(str(root)),
        inline_limit=100,
        fallback=fallback,
    )


@pytest.mark.parametrize(
    ("attempt", "fallback", "expected"),
    [
        pytest.param(1, False, "outputs/r1/train/attempt-1", id="attempt"),
        pytest.param(3, False, "outputs/r1/train/attempt-3", id="retry"),
        pytest.param(3, True, "outputs/r1/train/fallback-3", id="fallback"),
    ],
)
def test_output_path(attempt: int, fallback: bool, expected: str) -> None:
    assert output_path("r1", "train", attempt, fallback=fallback) == expected


def test_each_attempt_and_fallback_writes_its_own_file(tmp_path: Path) -> None:
    refs = [
        store(BIG, tmp_path, 1),
        store(BIG[::-1], tmp_path, 2),
        store(BIG, tmp_path, 2, fallback=True),
    ]

    uris = [ref.uri for ref in refs]
    assert uris == [
        str(tmp_path / "outputs" / "r1" / "train" / name)
        for name in ("attempt-1", "attempt-2", "fallback-2")
    ]
    for ref in refs:  # each ref names exactly the bytes it hashed
        data = Path(ref.uri or "").read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (ref.size, ref.sha256)
    assert load_output(refs[1], ArtifactStore(str(tmp_path))) == BIG[::-1]


def test_a_small_output_stays_inline(tmp_path: Path) -> None:
    ref = store({"rows": 3}, tmp_path, 1)

    assert (ref.kind, ref.uri, ref.data) == ("inline", None, b'{"rows": 3}')
    assert not (tmp_path / "outputs").exists()


def test_an_output_of_the_layout_without_attempt_folders_is_kept_and_still_loads(
    tmp_path: Path,
) -> None:
    # A run begun before outputs had a folder per task: the task's file is where
    # the new folder would go (``retry --from`` runs that task again).
    old = tmp_path / "outputs" / "r1" / "train"
    old.parent.mkdir(parents=True)
    name, data = serialize(BIG)
    old.write_bytes(data)
    old_ref = OutputRef(
        "r1", "train", "file", name, len(data), hashlib.sha256(data).hexdigest(), uri=str(old)
    )

    ref = store(BIG[:10] * 100, tmp_path, 2)

    assert ref.uri == str(tmp_path / "outputs" / "r1" / "train@attempt-2")
    assert load_output(ref, ArtifactStore(str(tmp_path))) == BIG[:10] * 100
    assert old.read_bytes() == data  # the committed file is untouched
    assert load_output(old_ref, ArtifactStore(str(tmp_path))) == BIG
