"""Run every bench script, one process each, and print their figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

for script in (
    "overhead.py",
    "startup.py",
    "scale.py",
    "fanout.py",
    "cache.py",
    "listsched.py",
    "queue_throughput.py",
    "metrics_scrape.py",
):
    subprocess.run([sys.executable, str(HERE / script)], check=True, cwd=HERE)
