"""The README's `extract` step: write a small customer table as CSV.

It runs as a bash task (`python3 extract.py --out data.csv`), so it starts in the
pipeline's folder and `data.csv` lands beside `churn.yaml`. Its last line of
output, the file's absolute path, is the task's output: `train` receives it.
Standard library only, seeded, so every run writes the same rows.
"""

from __future__ import annotations

import argparse
import csv
import os
import random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="the CSV file to write")
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args()
    rng = random.Random(7)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["customer_id", "tenure_months", "support_calls", "churned"])
        for customer in range(args.rows):
            tenure, calls = rng.randint(1, 72), rng.randint(0, 9)
            risk = 0.75 * calls / 9 + 0.25 * (1 - tenure / 72) + rng.uniform(-0.1, 0.1)
            writer.writerow([customer, tenure, calls, int(risk > 0.5)])
    print(f"wrote {args.rows} customers")
    print(os.path.abspath(args.out))


if __name__ == "__main__":
    main()
