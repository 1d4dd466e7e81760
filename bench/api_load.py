"""Load on a local ``stageflow serve`` (one uvicorn process, no worker, SQLite): requests/s
and latency p50/p99 per route. The load comes from ``wrk`` (Debian's package: ``apt-get
install wrk``) when it is installed, else from an asyncio httpx client, which is itself
the bottleneck (~300 requests/s on this machine). Either shares the machine's two cores
with the server: the figures are the pair's.

A1  GET  /api/v1/runs/{run_id}   (a queued one-task run)
A2  GET  /api/v1/runs?limit=50   (a store of --runs runs)
A3  POST /api/v1/runs            (queued runs: submitted runs/s)

Usage: python bench/api_load.py [--seconds S] [--requests N] [--concurrency C] [--runs N]
       [--client wrk|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import report

STAGEFLOW = Path(sys.executable).with_name("stageflow")
SPEC = {
    "name": "load",
    "tasks": [
        {"id": "a", "operator": "data_ingestion", "parameters": {"source": "x.csv"}},
    ],
}


def _cli(home: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    out = subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return out.stdout.strip()


def _start(home: Path, workers: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    err = (home.parent / "serve.err").open("wb")
    proc = subprocess.Popen(
        [str(STAGEFLOW), "--home", str(home), "serve", "--port", "0", "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://\S+) ", (home.parent / "serve.err").read_text())
        if found:
            return proc, found.group(1)
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("serve did not start: " + (home.parent / "serve.err").read_text())


async def _hammer(
    client: httpx.AsyncClient, method: str, url: str, n: int, conc: int, body: Any = None
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def one() -> None:
        nonlocal errors
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            r = await client.request(method, url, json=body)
            latencies.append(time.perf_counter() - t)
            if r.status_code >= 400:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conc)))
    return time.perf_counter() - start, latencies, errors


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _main(args: argparse.Namespace, base: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        r = await client.post("/api/v1/pipelines", json=SPEC)
        assert r.status_code in (200, 201), r.text
        run_ids = []
        for _ in range(args.runs):
            r = await client.post("/api/v1/runs", json={"pipeline_id": "load"})
            assert r.status_code == 202, r.text
            run_ids.append(r.json()["run_id"])
        cases = _cases(run_ids[0])
        if args.client == "wrk":
            for label, method, url, body in cases:
                _wrk(label, method, base + url, body, token, args)
            return
        for label, method, url, body in cases:
            await _hammer(client, method, url, min(200, args.requests), args.concurrency, body)
            wall, lat, errors = await _hammer(
                client, method, url, args.requests, args.concurrency, body
            )
            report(
                label,
                requests_per_s=len(lat) / wall,
                p50_ms=statistics.median(lat) * 1e3,
                p99_ms=_pct(lat, 99) * 1e3,
                errors=errors,
                concurrency=args.concurrency,
            )


def _cases(run_id: str) -> list[tuple[str, str, str, Any]]:
    return [
        ("A1 GET /api/v1/runs/{run_id}", "GET", f"/api/v1/runs/{run_id}", None),
        ("A2 GET /api/v1/runs?limit=50", "GET", "/api/v1/runs?limit=50", None),
        ("A3 POST /api/v1/runs", "POST", "/api/v1/runs", {"pipeline_id": "load"}),
    ]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(label: str, method: str, url: str, body: Any, token: str, args: Any) -> None:
    """``wrk`` on one route (its Lua script sets the method and body); prints the figures."""
    import json

    script = Path(tempfile.mkdtemp()) / "request.lua"
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = '{json.dumps(body)}'")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{args.concurrency}",
            f"-d{args.seconds}s",
            "--latency",
            "-s",
            str(script),
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {
        p: float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    report(
        label,
        requests_per_s=rate,
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        errors=int(bad.group(1)) if bad else 0,
        concurrency=args.concurrency,
        client="wrk",
    )


def main() -> None:
    import shutil

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx"
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sf-api-load-")) / "home"
    token = _cli(home, "tokens", "create", "--name", "load", "--role", "admin")
    proc, base = _start(home)
    try:
        asyncio.run(_main(args, base, token))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
