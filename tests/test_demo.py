"""The demo's printed summary (spark_jobs/demo.py) of a report as the demo writes it, and what it
refuses before it starts Spark."""

from __future__ import annotations

import pytest

from rec_plugin.errors import InputError
from spark_jobs.demo import main, summary

# A report of `sparkrec demo --rows-per-day 40` (its scalar fields), whose test day holds one class.
ONE_CLASS_TEST_DAY = {
    "generate": {"rows": 160, "days": 4, "rows_per_s": 13.6, "oracle_auc": 0.79, "first_order_auc": 0.75},
    "ingest": {"lines_read": 160, "accepted": 160, "rejected": 0, "bronze_table": "b", "bronze_version": 0},
    "featurize": {"rows_out": 160, "rows_per_s": 15.8, "gpu_eligible_fraction": 1.0, "bronze_version": 0},
    "train": {
        "model": "dlrm",
        "backend": "horovod",
        "workers": 2,
        "samples_per_s": 131.0,
        "auc": None,
        "logloss": 0.67,
        "oracle_auc": None,
        "oracle_logloss": 0.56,
        "run_dir": "file:///r",
    },
    "serve": {
        "triton_version": "2.51.0",
        "versions_loaded": [1],
        "parity_max_abs_diff": 0.0,
        "p50_ms_b2048": 12.5,
        "p99_ms_b2048": 20.0,
    },
    "score": {"rows": 40, "predictions_table": "p"},
    "baseline": {"model": "logistic", "auc": None},
}


def test_a_test_day_of_one_label_class_is_summarized_without_an_auc():
    lines = summary(ONE_CLASS_TEST_DAY).splitlines()
    train, baseline = (next(line for line in lines if line.startswith(s)) for s in ("train:", "baseline:"))
    assert "test AUC none (one label class) (oracle none (one label class))" in train
    assert "logloss 0.6700 (oracle 0.5600)" in train
    assert baseline.endswith("test AUC none (one label class)")
    scored = {**ONE_CLASS_TEST_DAY, "train": {**ONE_CLASS_TEST_DAY["train"], "auc": 0.8}}
    scored["baseline"] = {"model": "logistic", "auc": 0.7}
    assert "test AUC 0.7000 (dlrm +0.1000)" in summary(scored)


@pytest.mark.parametrize(
    "sizes", [["--rows-per-day", "0"], ["--rows-per-day", "1001"], ["--days", "0"]], ids=str
)
@pytest.mark.parametrize("story", [[], ["--retrain"]], ids=["pipeline", "retrain"])
def test_sizes_the_generator_refuses_end_the_demo_in_one_line_before_it_removes_anything(
    tmp_path, sizes, story
):
    if story and sizes[0] == "--days":
        sizes = ["--rows-per-day", "-5"]  # the story has its own days
    last_run = tmp_path / "runs" / "dlrm" / "kept"
    last_run.mkdir(parents=True)
    with pytest.raises(InputError) as refused:
        main(["--out", str(tmp_path), *story, *sizes])
    assert "must be" in str(refused.value) and "\n" not in str(refused.value)
    assert last_run.is_dir(), "the retrain story removed the last run's outputs first"
