"""notebooks/end_to_end.py (Databricks source format) runs the whole pipeline as a plain script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from spark_jobs.layout import PipelineLayout

REPO = Path(__file__).resolve().parents[1]


def test_the_notebook_runs_end_to_end_as_a_script_on_tiny_data(tmp_path):
    notebook = REPO / "notebooks" / "end_to_end.py"
    assert notebook.read_text().startswith("# Databricks notebook source\n")
    env = {**os.environ, "SPARKREC_NOTEBOOK_OUT": str(tmp_path), "SPARKREC_NOTEBOOK_ROWS_PER_DAY": "20000"}
    result = subprocess.run(
        [sys.executable, str(notebook)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(PipelineLayout(tmp_path).report.read_text())
    assert report["ingest"]["accepted"] == 80_000
    assert report["featurize"]["rows_out"] == 80_000
    assert 0.55 < report["train"]["auc"] < 1.0  # 40k training rows: it learns something
    assert report["score"]["rows"] == 20_000
    assert (tmp_path / "repository" / "ctr" / "config.pbtxt").is_file()
    assert (tmp_path / "repository" / "ctr_model" / "1" / "model.pt").is_file()
