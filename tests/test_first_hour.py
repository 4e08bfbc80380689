"""A new user's first hour: every stage runs under a plain `spark-submit` as the README documents,
and expected failures end with one line on stderr, a non-zero exit status and no table left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql.types import LongType, StructField, StructType

from rec_plugin.dataset import load_dataset
from rec_plugin.errors import EXIT_INPUT_ERROR, EXIT_INTERRUPTED, InputError, raised_in_a_task, run_command
from rec_plugin.machine_cache import CACHE_ENV
from serving.server import free_port
from spark_jobs.class_archive import install_record, prune_archives
from spark_jobs.featurize import featurize
from spark_jobs.generate import GeneratorConfig, generate
from spark_jobs.ingest import ingest
from spark_jobs.ingest import main as ingest_main
from spark_jobs.jvm_console import JVM_START_WARNING, start_without_warning
from spark_jobs.score import score
from spark_jobs.session import class_archive, pyspark_install

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = GeneratorConfig(rows_per_day=2_000, files_per_day=1)
# Lying beside the logs: not raw files, so ingest leaves them (and says so).
STRAY_FILES = {"day_0/notes.txt": b"not a log\n", "day_1/embeddings.npy": b"\x93NUMPY\x01\x00"}


def run(command: list[str], logs: Path) -> subprocess.CompletedProcess:
    """A command as a user runs it from the repository, with the venv's bin first on PATH."""
    return subprocess.run(command, cwd=REPO, env=user_env(logs), capture_output=True, text=True, timeout=900)


def user_env(logs: Path) -> dict[str, str]:
    """A user's shell in the repository: the venv's bin first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SPARKREC_LOG_DIR": str(logs)}
    # The test session's Spark set PYSPARK_PYTHON, which a user's shell need not have.
    for variable in ("SPARKREC_LOG_FILE", "PYSPARK_PYTHON"):
        env.pop(variable, None)
    return env


def spark_submit(script: str, *args: str, logs: Path) -> subprocess.CompletedProcess:
    return run([str(BIN / "spark-submit"), f"spark_jobs/{script}", *args], logs)


def sparkrec(*args: str, logs: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "spark_jobs.cli", *args], logs)


@pytest.fixture(scope="module")
def tiny(spark, tmp_path_factory) -> Path:
    """4 days x 2,000 generated rows, with stray files beside the logs."""
    root = tmp_path_factory.mktemp("first_hour")
    generate(spark, str(root), TINY)
    for relative, content in STRAY_FILES.items():
        (root / "raw" / relative).write_bytes(content)
    return root


def test_stages_run_under_plain_spark_submit_as_documented(spark, tiny, tmp_path):
    raw, lake, logs = tiny / "raw", tmp_path / "lake", tmp_path / "logs"
    bronze, features, workflow = lake / "bronze", lake / "features", lake / "workflow"
    ingested = spark_submit(
        "ingest.py",
        "--input",
        str(raw),
        "--bronze",
        str(bronze),
        "--rejects",
        str(lake / "rejects"),
        logs=logs,
    )
    assert ingested.returncode == 0, ingested.stderr
    assert "skipping 2 files not matching *.tsv,*.tsv.gz" in ingested.stdout
    assert "INFO" not in ingested.stdout + ingested.stderr  # Spark's log went to its file
    assert any(logs.glob("sparkrec-ingest-*.log"))
    assert spark.read.format("delta").load(str(bronze)).count() == TINY.days * TINY.rows_per_day
    assert spark.read.format("delta").load(str(lake / "rejects")).count() == 0

    featurized = spark_submit(
        "featurize.py", "--bronze", str(bronze), "--features", str(features), "--workflow", str(workflow),
        "--train-days", "0,1", "--valid-days", "2", "--test-days", "3", logs=logs,
    )  # fmt: skip
    assert featurized.returncode == 0, featurized.stderr
    table = spark.read.format("delta").load(str(features))
    assert table.count() == TINY.days * TINY.rows_per_day
    assert {r["split"] for r in table.select("split").distinct().collect()} == {"train", "valid", "test"}

    run_dir, repository = tmp_path / "run", tmp_path / "repository"
    trained = spark_submit(
        "train.py", "--features", str(features), "--workflow", str(workflow), "--run-dir", str(run_dir),
        "--model", "logistic", "--backend", "single", "--workers", "1", logs=logs,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "UserWarning" not in trained.stderr, trained.stderr  # a torch tensor of a read-only array
    exported = sparkrec("export", "--run-dir", str(run_dir), "--repository", str(repository), logs=logs)
    assert exported.returncode == 0, exported.stderr
    run_files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}

    predictions = tmp_path / "predictions"
    scored = spark_submit(
        "score.py", "--bronze", str(bronze), "--days", "3", "--predictions", str(predictions),
        "--repository", str(repository), "--name", "ctr", "--workflow", str(workflow), logs=logs,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    rows = spark.read.format("delta").load(str(predictions))
    assert rows.count() == TINY.rows_per_day
    assert rows.where("probability < 0 OR probability > 1 OR probability IS NULL").count() == 0
    # Scoring reads the exported model and writes nothing into the training run.
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == run_files


def test_a_session_started_from_the_venvs_python_maps_the_class_archive_and_runs_workers_on_it(tmp_path):
    """`make setup` wrote the class archive of this pyspark and java, and the JVM that build_session
    starts maps it: with -Xshare:on, a JVM that cannot map its archive does not start at all. Started
    as `.venv/bin/python ...` with neither the venv on PATH nor PYSPARK_PYTHON, its local workers run
    that python too (a python3 from PATH lacks the venv's packages)."""
    assert class_archive().is_file(), f"{class_archive()} is missing: run make setup"
    code = (
        "from spark_jobs.session import build_session; "
        "spark = build_session('local', 'archive-check', {'spark.driver.extraJavaOptions': '-Xshare:on'}); "
        "print('rows', spark.range(3).count()); "
        "executable = lambda _: __import__('sys').executable; "
        "print('workers', spark.sparkContext.parallelize([0], 1).map(executable).collect())"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "SPARKREC_LOG_FILE")}
    environment["PATH"] = os.pathsep.join(p for p in environment["PATH"].split(os.pathsep) if Path(p) != BIN)
    environment["SPARKREC_LOG_DIR"] = str(tmp_path / "logs")
    started = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
    )
    assert started.returncode == 0 and "rows 3" in started.stdout, started.stdout + started.stderr
    assert f"workers {[sys.executable]}" in started.stdout, started.stdout


def test_an_archive_that_cannot_be_written_is_a_warning_and_a_killed_setups_staging_file_goes(
    tmp_path, monkeypatch
):
    """The archive only makes sessions start sooner: a JVM that cannot write it once failed `make setup`
    and so every `make test`. A setup killed while archiving left its staging file (186 MB) for good."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    target = class_archive()
    target.parent.mkdir(parents=True)
    abandoned, writing = (target.with_name(f"{target.name}.{pid}.tmp") for pid in (2**22 + 1, os.getpid()))
    for staging in (abandoned, writing):
        staging.write_bytes(b"part of an archive")
    # A session that cannot start: its jars are not where the cache should hold them.
    environment = {
        **os.environ,
        "SPARKREC_JAR_DIR": str(tmp_path / "no-jars"),
        "SPARKREC_LOG_DIR": str(tmp_path),
    }
    archived = subprocess.run(
        [sys.executable, "-m", "spark_jobs.class_archive"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert archived.returncode == 0, archived.stderr
    warning = [line for line in archived.stderr.splitlines() if "class archive: warning: not written" in line]
    assert len(warning) == 1 and "start without it" in warning[0] and "no-jars" in warning[0], archived.stderr
    assert not target.exists() and not abandoned.exists() and writing.exists()


def test_setup_records_the_archives_install_and_a_new_archive_removes_those_of_installs_gone(tmp_path):
    """Each checkout's venv has its own archive (186 MB): a machine that clones and tests many times
    would fill its disk. `make setup` recorded this one's install; a new archive removes the archives
    of deleted installs, the one of its own install it replaces and unrecorded ones, and keeps
    another live install's."""
    assert install_record(class_archive()).read_text().strip() == str(pyspark_install())
    live, gone = tmp_path / "live-venv", tmp_path / "deleted-venv"
    live.mkdir()
    archives = {
        name: tmp_path / "class-archives" / f"spark-{name}.jsa"
        for name in ("new", "same", "live", "gone", "old")
    }
    archives["new"].parent.mkdir()
    for name, owner in {
        "new": pyspark_install(),
        "same": pyspark_install(),
        "live": live,
        "gone": gone,
        "old": None,
    }.items():
        archives[name].write_bytes(b"archive")
        if owner is not None:
            install_record(archives[name]).write_text(f"{owner}\n")
    removed = prune_archives(archives["new"], pyspark_install())
    assert sorted(removed) == sorted(archives[name] for name in ("same", "gone", "old"))
    left = sorted(path.name for path in archives["new"].parent.iterdir())
    assert left == ["spark-live.install", "spark-live.jsa", "spark-new.install", "spark-new.jsa"]


SPARK_STAGE_BAR = "[Stage "


def _one_line_error(result: subprocess.CompletedProcess, stage: str, problem: str) -> None:
    assert result.returncode == EXIT_INPUT_ERROR, result.stderr
    line = _one_line_message(result, f"^sparkrec {re.escape(stage)}: error: ")
    assert problem in line, line


def _one_line_message(result: subprocess.CompletedProcess, pattern: str) -> str:
    """The one line stderr shows but for Spark's live progress bar (which redraws itself with
    carriage returns, and which the work before a failure may show)."""
    shown = [line.rsplit("\r", 1)[-1] for line in result.stderr.split("\n")]
    lines = [line for line in shown if line.strip()]
    lines = [line for line in lines if not line.startswith(SPARK_STAGE_BAR)]
    assert len(lines) == 1 and re.match(pattern, lines[0]), result.stderr
    assert "Traceback" not in result.stdout and "at org.apache" not in result.stdout
    return lines[0]


@pytest.mark.parametrize(
    "pieces, shown",
    [
        (
            [JVM_START_WARNING[:20], JVM_START_WARNING[20:] + b"[Stage 1]\r[Stage 2]\rend\n"],
            b"[Stage 1]\r[Stage 2]\rend\n",
        ),
        ([b"Error: no java\n", JVM_START_WARNING], b"Error: no java\n"),
        ([b"line\n" * 8, JVM_START_WARNING], b"line\n" * 8 + JVM_START_WARNING),  # past the JVM's start
        ([JVM_START_WARNING, JVM_START_WARNING + b"end\n"], JVM_START_WARNING + b"end\n"),
        (
            [b"Picked up JAVA_TOOL_OPTIONS: -Xss4m\n", JVM_START_WARNING, b"[Stage 1]\r"],
            b"Picked up JAVA_TOOL_OPTIONS: -Xss4m\n[Stage 1]\r",
        ),
        ([b"[Stage 1]", b"\r[Stage 2]\r", b"\n"], b"[Stage 1]\r[Stage 2]\r\n"),
    ],
)
def test_a_started_processs_stderr_loses_only_the_start_warning_among_its_first_lines(pieces, shown, capfd):
    """The process started (the JVM) writes through the pipe for its whole life, in pieces that may
    split the warning or a line; the warning is dropped once, where it comes among its first lines
    (after `Picked up ...` notices), and the rest passes unchanged, a progress bar at once."""
    script = "import sys, time\nfor piece in sys.argv[1:]:\n"
    script += "    sys.stderr.buffer.write(bytes.fromhex(piece)); sys.stderr.flush(); time.sleep(0.2)\n"
    command = [sys.executable, "-c", script, *(piece.hex() for piece in pieces)]
    started: list[subprocess.Popen] = []
    threads_before = set(threading.enumerate())
    started.append(start_without_warning(lambda stderr: subprocess.Popen(command, stderr=stderr)))
    assert started[0].wait(timeout=60) == 0
    for drain in set(threading.enumerate()) - threads_before:
        drain.join(timeout=10)
    assert capfd.readouterr().err == shown.decode()


def test_a_ctrl_c_mid_stage_is_one_line_and_leaves_no_table(default_data, tmp_path):
    """A terminal's Ctrl-C reaches the command and its JVM (one process group): the command says it
    was interrupted, in one line, exits 130 and leaves no table, not py4j's traces of broken calls."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    errors = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "spark_jobs.cli", "ingest", "--input", str(default_data[0] / "raw")]
    command += ["--bronze", str(out / "bronze"), "--rejects", str(out / "rejects")]
    with errors.open("w") as stderr:
        started = subprocess.Popen(
            command,
            cwd=REPO,
            env=user_env(logs),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while (
            SPARK_STAGE_BAR not in errors.read_text()
            and started.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)  # Spark runs the stage's first job
        os.killpg(started.pid, signal.SIGINT)
        assert started.wait(timeout=300) == EXIT_INTERRUPTED, errors.read_text()
    result = subprocess.CompletedProcess(command, EXIT_INTERRUPTED, "", errors.read_text())
    _one_line_message(result, r"^sparkrec ingest: interrupted \(log: ")
    assert not (out / "bronze" / "_delta_log").exists() and not (out / "rejects" / "_delta_log").exists()


def test_each_stage_fails_in_one_line_and_leaves_no_table(tiny, tmp_path):
    missing, logs, out = tmp_path / "missing", tmp_path / "logs", tmp_path / "out"
    bronze = out / "bronze"
    made = sparkrec(
        "ingest", "--input", str(tiny / "raw"), "--bronze", str(bronze), "--rejects", str(out / "rejects"),
        "--days", "0,1", logs=logs,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    unreachable = f"127.0.0.1:{free_port()}"
    cases = {  # stage: (arguments, what the line must name, the path that must not appear)
        "generate": (["--out", str(out / "gen"), "--days", "0"], "must be positive", out / "gen"),
        "ingest": (
            ["--input", str(missing), "--bronze", str(out / "b2"), "--rejects", str(out / "r2")],
            f"input folder {missing} does not exist",
            out / "b2",
        ),
        "featurize": (
            [
                "--bronze",
                str(bronze),
                "--features",
                str(out / "f"),
                "--workflow",
                str(out / "w"),
                "--train-days",
                "0",
                "--test-days",
                "5",
            ],
            "days [5] are not in bronze table",
            out / "f",
        ),  # fmt: skip
        "train": (
            ["--features", str(missing), "--workflow", str(missing), "--run-dir", str(out / "run")],
            f"{missing} does not exist",
            out / "run",
        ),
        "score": (
            [
                "--bronze",
                str(bronze),
                "--days",
                "0",
                "--predictions",
                str(out / "p"),
                "--via-triton",
                unreachable,
            ],
            f"no Triton server answers at {unreachable}",
            out / "p",
        ),
        "export": (
            ["--run-dir", str(missing), "--repository", str(out / "repo")],
            str(missing),
            out / "repo",
        ),
        "serve": (
            [
                "--repository",
                str(out / "served"),
                "--load",
                "nosuch",
                "--http-port",
                str(free_port()),
                "--grpc-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
            ],
            "models ['nosuch'] are not in repository",
            out / "served",
        ),  # fmt: skip
    }
    with ThreadPoolExecutor(3) as pool:
        results = {
            stage: pool.submit(sparkrec, stage, *args, logs=logs) for stage, (args, *_) in cases.items()
        }
    for stage, (_, problem, not_made) in cases.items():
        _one_line_error(results[stage].result(), stage, problem)
        assert not not_made.exists(), stage
    # --debug shows the trace instead.
    debug = sparkrec("generate", "--out", str(out / "gen"), "--days", "0", "--debug", logs=logs)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_ingest_takes_only_raw_files_and_refuses_before_work(spark, tiny, tmp_path):
    bronze, rejects = str(tmp_path / "bronze"), str(tmp_path / "rejects")
    with pytest.raises(InputError, match=r"no raw files for days \[7\] under .* \(days found: 0,1,2,3\)"):
        ingest(spark, str(tiny / "raw"), bronze, rejects, days=[0, 7])
    # What the folder holds instead is named (a pattern of .csv over .tsv files, say).
    elsewhere = r"no raw files matching \*\.csv under .* \(it holds .*: give --glob to take them\)$"
    with pytest.raises(InputError, match=elsewhere):
        ingest(spark, str(tiny / "raw"), bronze, rejects, patterns=["*.csv"])
    with pytest.raises(InputError, match="notes.txt has no day_<d> in its path"):
        ingest(spark, str(tiny / "raw" / "day_0"), bronze, rejects, patterns=["*.txt"])
    with pytest.raises(InputError, match=r"expected day numbers such as 0,1,2, got 'one'"):
        ingest_main(["--input", "x", "--bronze", "y", "--rejects", "z", "--days", "one"])
    assert not (tmp_path / "bronze").exists() and not (tmp_path / "rejects").exists()
    # A table of another kind at --bronze is refused, and left as it was.
    other = str(tmp_path / "other")
    spark.range(3).write.format("delta").save(other)
    with pytest.raises(InputError, match="holds a Delta table with other columns than a bronze table"):
        ingest(spark, str(tiny / "raw"), other, rejects, days=[0])
    assert DeltaTable.forPath(spark, other).history().count() == 1
    # So is a bronze table whose columns the definition now types otherwise, before any write.
    schema = load_dataset("criteo").bronze_schema()
    retyped = StructType([StructField(f.name, LongType()) if f.name == "I1" else f for f in schema.fields])
    spark.createDataFrame([], retyped).write.format("delta").save(bronze)
    with pytest.raises(InputError, match=r"whose columns have other types \(I1 bigint, now int\): "):
        ingest(spark, str(tiny / "raw"), bronze, rejects, days=[0])
    assert DeltaTable.forPath(spark, bronze).history().count() == 1


def test_featurize_and_score_refuse_bad_arguments_before_work(spark, tiny, tmp_path):
    bronze = str(tmp_path / "bronze")
    ingest(spark, str(tiny / "raw"), bronze, str(tmp_path / "rejects"), days=[0, 1])
    features, workflow = str(tmp_path / "features"), str(tmp_path / "workflow")
    splits = {"train": [0], "valid": [], "test": [1]}
    refusals = {
        r"bronze table .* has versions 0 to 0, not 4": dict(bronze_version=4),
        r"days \[1\] are in more than one": dict(splits={"train": [0, 1], "valid": [1], "test": []}),
        "is the bronze table": dict(features=bronze),
    }
    for message, changes in refusals.items():
        arguments = {"features": features, "splits": splits, **changes}
        with pytest.raises(InputError, match=message):
            featurize(
                spark, bronze, arguments.pop("features"), workflow, arguments.pop("splits"), **arguments
            )
    with pytest.raises(InputError, match=r"rejects is ingest's rejects table \(the rows it refused\)"):
        featurize(spark, str(tmp_path / "rejects"), features, workflow, splits)
    assert not (tmp_path / "features").exists() and not (tmp_path / "workflow").exists()
    predictions = str(tmp_path / "predictions")
    with pytest.raises(InputError, match=r"days \[3\] are not in bronze table"):
        score(spark, bronze, [3], predictions, str(tmp_path), workflow)
    with pytest.raises(InputError, match="no TorchScript model ctr .* in the model repository"):
        score(spark, bronze, [1], predictions, str(tmp_path / "repository"), workflow)
    assert not (tmp_path / "predictions").exists()


def test_run_command_prints_one_line_or_the_trace_with_debug(capsys):
    def refuse(argv: list[str]) -> None:
        raise InputError(f"nothing to do for {argv}")

    with pytest.raises(SystemExit) as exited:
        run_command(refuse, "sparkrec thing", ["a"])
    assert exited.value.code == EXIT_INPUT_ERROR
    assert capsys.readouterr().err.startswith("sparkrec thing: error: nothing to do for ['a']")
    with pytest.raises(InputError, match=r"nothing to do for \['a'\]"):
        run_command(refuse, "sparkrec thing", ["a", "--debug"])


def test_an_input_error_raised_in_a_spark_task_is_one_line(spark, capsys):
    """A task's refusal (a client-side check inside `mapInPandas`, as score --via-triton makes)
    reaches the driver inside PySpark's PythonException, a worker's trace: it is said in one line."""

    def refuse_in_a_task(frames):  # noqa: ANN001, ANN202 - mapInPandas' iterator of pandas frames
        for frame in frames:
            raise InputError(f"column x: {len(frame)} values beyond 2^53")
            yield frame

    def command(argv: list[str]) -> None:
        spark.range(3, numPartitions=1).mapInPandas(refuse_in_a_task, "id long").collect()

    with pytest.raises(SystemExit) as exited:
        run_command(command, "sparkrec thing", [])
    assert exited.value.code == EXIT_INPUT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparkrec thing: error: column x: 3 values beyond 2^53")
    with pytest.raises(Exception, match="PythonException|InputError"):  # --debug keeps the trace
        run_command(command, "sparkrec thing", ["--debug"])


def test_an_input_error_followed_by_a_bug_in_a_task_keeps_the_bugs_trace():
    """A worker trace in which another exception followed the InputError is a bug's: not one line."""
    trace = (
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "rec_plugin.errors.InputError: column x: 3 values beyond 2^53\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  File \"y.py\", line 2\nAttributeError: 'NoneType' object\n"
    )
    assert raised_in_a_task(RuntimeError(trace)) is None
    alone = raised_in_a_task(RuntimeError(trace.split("\n\nDuring")[0]))
    assert str(alone) == "column x: 3 values beyond 2^53"
