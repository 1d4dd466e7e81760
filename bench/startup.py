"""W4: `stageflow run` of a 3-task YAML pipeline as a whole process.

Wall time and peak memory of the CLI process, best of N, with the state folder
already created (a second run) and fresh (first run in an empty folder). The
package is byte-compiled first, as a regular (non-editable) install is.

Usage: python bench/startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report

SPEC = """\
name: w4
tasks:
  - {id: a, call: w4_steps:one}
  - {id: b, call: w4_steps:add, upstream: [a]}
  - {id: c, call: w4_steps:add, upstream: [b]}
"""
STEPS = """\
def one():
    return 1


def add(*values):
    return sum(values) + 1
"""


def once(cli: str, spec: Path, home: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [cli, "--home", str(home), "run", str(spec)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("stageflow"))
    # Measure the CLI as a regular install runs it: with its modules byte-compiled
    # (`pip install .` compiles them; an editable install does not, and with
    # PYTHONDONTWRITEBYTECODE=1 every start would compile ~60 modules again).
    import stageflow

    package = str(Path(stageflow.__file__).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)
    work = Path(tempfile.mkdtemp(prefix="stageflow-w4-"))
    (work / "w4.yaml").write_text(SPEC)
    (work / "w4_steps.py").write_text(STEPS)
    os.chdir(work)
    fresh = min(once(cli, work / "w4.yaml", work / f"home{i}")[0] for i in range(3))
    warm = [once(cli, work / "w4.yaml", work / "home") for _ in range(args.repeat)]
    report(
        "W4 stageflow run 3-task YAML",
        wall_s=min(w for w, _ in warm),
        median_s=sorted(w for w, _ in warm)[len(warm) // 2],
        first_run_s=fresh,
        peak_rss_mib=max(m for _, m in warm),
    )


if __name__ == "__main__":
    main()
