"""What a definition's `multiline` costs ingest: quoted CSV with `quote` alone against `quote` plus
`multiline` on the same files (no field holds a line end: the price of turning it on), and `multiline`
on files where some titles hold one; interleaved round by round, rows/s medians and ratios.

    .venv/bin/python bench/multiline_ingest.py [--rows-per-day 250000] [--days 4] [--spanning 0.05]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from harness import print_medians, report_quiet, scratch_folder

from spark_jobs.ingest import ingest
from spark_jobs.session import build_session

COLUMNS = [
    {"name": "click", "type": "int", "rule": "binary", "tags": ["label"]},
    {"name": "user_id", "type": "string", "tags": ["categorical", "user_id"]},
    {"name": "item_id", "type": "string", "tags": ["categorical", "item_id"]},
    {"name": "title", "type": "string", "tags": ["categorical"]},
    {"name": "price", "type": "float", "tags": ["continuous"]},
]


def write_csv(folder: Path, days: int, rows_per_day: int, spanning: float, seed: int = 0) -> None:
    """Quoted titles (a comma and a doubled quote in each); `spanning` of them hold a line end."""
    draw = random.Random(seed)
    for day in range(days):
        (folder / f"day_{day}").mkdir(parents=True)
        lines = []
        for row in range(rows_per_day):
            title = f'item {draw.randrange(10_000)}, the ""best"" one'
            if draw.random() < spanning:
                title = title.replace(", ", "\r\n", 1)
            lines.append(
                f'{int(draw.random() < 0.1)},u{draw.randrange(100_000)},i{row % 50_000},"{title}",9.5'
            )
        (folder / f"day_{day}" / "clicks.csv").write_text("\r\n".join(lines) + "\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--rows-per-day", type=int, default=250_000)
    parser.add_argument("--spanning", type=float, default=0.05, help="share of titles holding a line end")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = scratch_folder("sparkrec-multiline-")
    write_csv(folder / "one_line", args.days, args.rows_per_day, 0.0)
    write_csv(folder / "spanning", args.days, args.rows_per_day, args.spanning)
    definitions = {}
    for name, multiline in (("quote", False), ("multiline", True)):
        path = folder / f"{name}.json"
        fields = {"format": "csv", "file_patterns": ["*.csv"], "quote": '"', "multiline": multiline}
        path.write_text(json.dumps({"name": "clicks", "columns": COLUMNS, **fields}))
        definitions[name] = str(path)
    variants = {
        "quote, one-line rows": ("one_line", "quote"),
        "multiline, one-line rows": ("one_line", "multiline"),
        f"multiline, {args.spanning:.0%} of rows on 2 lines": ("spanning", "multiline"),
    }
    spark = build_session("local", "bench-multiline-ingest")
    report_quiet()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, (data, definition) in variants.items():
            lake = folder / f"lake_{repeat}_{len(rates[name])}_{data}_{definition}"
            started = time.perf_counter()
            report = ingest(
                spark,
                str(folder / data),
                str(lake / "bronze"),
                str(lake / "rejects"),
                dataset=definitions[definition],
            )
            rates[name].append(report["lines_read"] / (time.perf_counter() - started))
            assert report["rejected"] == 0, report
    medians = print_medians(rates, args.days * args.rows_per_day)
    baseline, *others = variants
    for name in others:
        print(f"{name}: {medians[name] / medians[baseline]:.2f}x the rate of {baseline}")


if __name__ == "__main__":
    main()
