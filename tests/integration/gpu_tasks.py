"""Task functions for the resource-scheduling runs (importable by worker processes)."""

from __future__ import annotations

import os
import time


def show_devices(seconds: float) -> str:
    """Print and return the GPU devices this attempt was given; fails when none were."""
    devices = os.environ["CUDA_VISIBLE_DEVICES"]
    print(f"CUDA_VISIBLE_DEVICES={devices}", flush=True)
    time.sleep(seconds)
    return devices


def no_devices() -> str | None:
    """What a task that asked for no GPU sees (nothing left over from an earlier attempt)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")
