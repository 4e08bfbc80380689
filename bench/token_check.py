"""What refusing the tokens ingest would reject (serving/preprocessor.py refuse_bad_tokens) costs the
preprocess model: in-process preprocessing of raw Criteo batches from bronze with the check and with
it skipped, interleaved call by call in one process; prints each one's median milliseconds a batch
per round, the median of those rounds and the ratio.

    .venv/bin/python bench/token_check.py --preprocess artifacts/demo/serving/repository/ctr_preprocess/1 \
        --bronze artifacts/demo/lake/bronze [--batch 2048] [--rounds 10] [--calls 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from harness import print_medians, report_quiet

import serving.preprocessor as preprocessor
from rec_plugin.schema import DAY, LINE_NUMBER, SOURCE_FILE
from spark_jobs.session import build_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preprocess", type=Path, required=True, help="an exported preprocess folder")
    parser.add_argument("--bronze", required=True, help="the bronze table its workflow was fitted from")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=30, help="calls of each variant a round")
    args = parser.parse_args()
    preprocess = preprocessor.Preprocessor(args.preprocess)
    checked = [c.name for c in preprocess.spec.categorical if c.token_width or c.alphabet]
    if not checked:
        parser.error(f"{args.preprocess} declares no token width or alphabet: export it with this checkout")
    spark = build_session()
    rows = spark.read.format("delta").load(args.bronze).orderBy(DAY, SOURCE_FILE, LINE_NUMBER)
    batch = preprocess.spec.batch(rows.limit(args.batch).toPandas())
    spark.stop()
    check = preprocessor.refuse_bad_tokens
    variants = {"without the check": lambda *_: None, "with the check": check}
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    report_quiet()
    for _ in range(args.rounds):
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.calls):
            for name, variant in variants.items():
                preprocessor.refuse_bad_tokens = variant
                start = time.perf_counter()
                preprocess(*batch)
                times[name].append((time.perf_counter() - start) * 1000)
        for name, values in times.items():
            rounds[name].append(statistics.median(values))
    preprocessor.refuse_bad_tokens = check
    print(f"{len(checked)} checked token columns, batches of {args.batch} rows, {args.calls} calls a round")
    medians = print_medians(rounds, None, unit="ms a batch", digits=3)
    print(f"ratio with/without: {medians['with the check'] / medians['without the check']:.3f}")


if __name__ == "__main__":
    main()
