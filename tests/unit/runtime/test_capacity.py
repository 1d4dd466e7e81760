"""Capacity detection and its configured overrides.

There is no GPU on this machine: GPU detection is shown with a stand-in
``nvidia-smi`` script on PATH that prints what the real one prints for -L.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stageflow.errors import UsageError
from stageflow.runtime.resources import detect_capacity, parse_counts


def test_detects_this_machine(tmp_path: Path) -> None:
    cap = detect_capacity(tmp_path, env={"PATH": "/nonexistent"})
    assert cap.cpu == len(os.sched_getaffinity(0))
    assert cap.memory_gb > 0.5
    assert cap.gpu == 0  # no nvidia-smi on that PATH
    assert cap.disk_gb > 0


def test_configured_values_win_and_seed_names_work(tmp_path: Path) -> None:
    env = {
        "PATH": "/nonexistent",
        "MAX_CPU_CORES": "3",
        "STAGEFLOW_MAX_MEMORY_GB": "8",
        "MAX_GPU_COUNT": "2",
        "STAGEFLOW_POOLS": "training=2, etl=4",
        "STAGEFLOW_CUSTOM_RESOURCES": "licenses=1.5",
    }
    cap = detect_capacity(tmp_path, env=env)
    assert (cap.cpu, cap.memory_gb, cap.gpu) == (3.0, 8.0, 2)
    assert cap.pools == {"training": 2, "etl": 4}
    assert cap.custom == {"licenses": 1.5}


def test_gpus_are_counted_from_nvidia_smi(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\n"
        "echo 'GPU 1: NVIDIA H200 (UUID: GPU-2)'\n"
    )
    fake.chmod(0o755)
    assert detect_capacity(tmp_path, env={"PATH": str(fake.parent)}).gpu == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"MAX_CPU_CORES": "many"}, "MAX_CPU_CORES is 'many'", id="not-a-number"),
        pytest.param({"MAX_MEMORY_GB": "-1"}, "must not be negative", id="negative"),
        pytest.param({"STAGEFLOW_POOLS": "training"}, "not NAME=AMOUNT", id="pool-no-amount"),
    ],
)
def test_bad_configuration_is_named(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        detect_capacity(tmp_path, env={"PATH": "/nonexistent", **env})


def test_parse_counts() -> None:
    assert parse_counts("", "X") == {}
    assert parse_counts("a=1,b=0.5,", "X") == {"a": 1.0, "b": 0.5}
