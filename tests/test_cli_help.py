"""`sparkrec <stage> --help` for every stage: it exits 0 and its description is a whole sentence (a
description cut from a docstring's first line stopped mid-sentence)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spark_jobs.cli import STAGES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """Each stage's --help, run at once: every one imports torch or pyspark (seconds each)."""
    started = {
        stage: subprocess.Popen(
            [sys.executable, "-m", "spark_jobs.cli", stage, "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stage in STAGES
    }
    done = {}
    for stage, process in started.items():
        out, err = process.communicate(timeout=300)
        done[stage] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


@pytest.mark.parametrize("stage", list(STAGES))
def test_help_describes_the_stage_in_a_whole_sentence(helps, stage):
    result = helps[stage]
    assert result.returncode == 0, result.stderr
    # argparse prints the usage, a blank line, the description (wrapped), a blank line, the options.
    blocks = result.stdout.split("\n\n")
    assert blocks[0].startswith(f"usage: sparkrec {stage} "), result.stdout
    description = " ".join(blocks[1].split())
    assert description.startswith(f"sparkrec {stage}: "), result.stdout
    assert description.endswith("."), f"sparkrec {stage} --help stops mid-sentence: {description!r}"


def test_serve_help_says_where_the_server_log_goes(helps):
    text = " ".join(helps["serve"].stdout.split())
    assert (
        "--log-file LOG_FILE" in text and "(default: tritonserver.log beside the repository folder)" in text
    )
