"""Server-sent events to many subscribers: one ``stageflow serve`` (one uvicorn process
and one worker, SQLite), a run of a chain of ``--tasks`` bash tasks, and
``--subscribers`` clients following its ``/events`` stream from the start (asyncio
httpx, on the same machine). Prints the events each subscriber got (all must get
all), the events delivered per second over the whole fan-out, and how long after the
run ended each subscriber saw its end (p50/p99: the streams poll the store every
0.25 s).

Usage: python bench/sse_fanout.py [--subscribers N] [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from _common import report
from api_load import _cli, _start


async def _follow(client: httpx.AsyncClient, url: str) -> tuple[int, float]:
    """The events one subscriber got, and when it saw the end."""
    events = 0
    async with client.stream("GET", url, timeout=120) as r:
        async for line in r.aiter_lines():
            if line.startswith("event: end"):
                return events, time.time()
            if line.startswith("id: "):
                events += 1
    return events, time.time()


async def _main(args: argparse.Namespace, base: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=args.subscribers + 4)
    tasks = [
        {
            "id": f"t{i}",
            "operator": "bash",
            "upstream": [f"t{i - 1}"] if i else [],
            "parameters": {"command": "true"},
        }
        for i in range(args.tasks)
    ]
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        saved = await client.post("/api/v1/pipelines", json={"name": "fan", "tasks": tasks})
        assert saved.status_code in (200, 201), saved.text
        started = time.time()
        run = await client.post("/api/v1/runs", json={"pipeline_id": "fan"})
        run_id = run.json()["run_id"]
        url = f"/api/v1/runs/{run_id}/events"
        got = await asyncio.gather(*(_follow(client, url) for _ in range(args.subscribers)))
        doc = (await client.get(f"/api/v1/runs/{run_id}")).json()
    ended = datetime.fromisoformat(doc["ended_at"]).timestamp()
    counts = [n for n, _ in got]
    lags = sorted(at - ended for _, at in got)
    wall = max(at for _, at in got) - started
    report(
        f"S1 {args.subscribers} subscribers x a {args.tasks}-task run",
        state=doc["state"],
        events_each=counts[0],
        all_equal=len(set(counts)) == 1,
        events_per_s=sum(counts) / wall,
        wall_s=wall,
        end_lag_p50_ms=statistics.median(lags) * 1e3,
        end_lag_p99_ms=lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))] * 1e3,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sf-sse-")) / "home"
    token = _cli(home, "tokens", "create", "--name", "sse", "--role", "admin")
    proc, base = _start(home, workers=1)
    try:
        asyncio.run(_main(args, base, token))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
