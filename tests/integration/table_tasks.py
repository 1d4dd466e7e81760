"""Tasks that pass pandas tables (small, in memory), for the table-rows tests.

``load_users`` (``users`` rows) and ``load_orders`` (``orders`` rows) start the
tables; ``clean`` keeps the users whose id is not a multiple of 3; ``joined``
stacks the clean users on the orders; ``summary`` reads ``joined`` and ``clean``
and returns a plain dict; ``banner`` touches no table; ``gate`` reads ``summary``
and ``joined`` and fails while the ``flag`` file is absent (a run to resume).
"""

from __future__ import annotations

import os

import pandas as pd


def load_users(users: int) -> pd.DataFrame:
    return pd.DataFrame({"id": range(users), "kind": ["user"] * users})


def load_orders(orders: int) -> pd.DataFrame:
    return pd.DataFrame({"id": range(orders), "kind": ["order"] * orders})


def clean(load_users: pd.DataFrame) -> pd.DataFrame:
    return load_users[load_users["id"] % 3 != 0]


def joined(clean: pd.DataFrame, load_orders: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([clean, load_orders], ignore_index=True)


def summary(joined: pd.DataFrame, clean: pd.DataFrame) -> dict[str, int]:
    return {"joined": len(joined), "clean": len(clean)}


def banner() -> str:
    return "no tables here"


def gate(summary: dict[str, int], joined: pd.DataFrame, flag: str) -> int:
    if not os.path.exists(flag):
        raise RuntimeError(f"flag file {flag} is missing")
    return summary["joined"] + len(joined)
