"""Writes the JVM's class archive (spark_jobs.session.class_archive) once per pyspark install and java:
`make setup` runs it, and it returns at once when that archive is there.

A session of the local profile runs what the stages run (Delta writes, reads at a version, a MERGE,
aggregations, joins, a window, Arrow collects) in a JVM started with -XX:ArchiveClassesAtExit; the
JVM writes the archive as it exits, into a staging file renamed into place once a JVM started on it
with sharing required runs a job (a truncated archive crashes every JVM that maps it), so that a setup
cut short leaves none and two setups at once leave one. Beside each archive a record names the pyspark
install it serves; writing one removes those of installs since deleted (each checkout's venv has its
own, 186 MB) and the one it replaces, so a machine that clones and tests many times keeps its disk.

    python -m spark_jobs.class_archive
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from delta.tables import DeltaTable
from pyspark import SparkContext
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from rec_plugin.errors import first_line
from spark_jobs.session import (
    QUIET_CLASS_ARCHIVE,
    build_session,
    class_archive,
    pyspark_install,
    read_profile,
)


def _workload(spark: SparkSession, folder: str) -> None:
    """A stage's worth of Spark and Delta, on a few thousand rows."""
    rows = spark.range(20_000).selectExpr(
        "id", "CAST(id % 4 AS INT) AS day", "CAST(id % 97 AS STRING) AS value"
    )
    rows.write.format("delta").partitionBy("day").save(f"{folder}/table")
    table = spark.read.format("delta").option("versionAsOf", 0).load(f"{folder}/table")
    counts = table.groupBy("value").count()
    ranked = counts.withColumn("rank", F.row_number().over(Window.orderBy(F.desc("count"), "value")))
    table.join(F.broadcast(ranked), "value", "left").where("day = 1").toPandas()
    updates = ranked.select(F.col("rank").alias("id"), F.lit(9).alias("day"), "value")
    target = DeltaTable.forPath(spark, f"{folder}/table").alias("t")
    target.merge(updates.alias("u"), "t.id = u.id").whenNotMatchedInsertAll().execute()
    spark.read.format("delta").load(f"{folder}/table").where("day = 9").inputFiles()
    spark.read.text(f"{folder}/table/_delta_log").count()


def install_record(archive: Path) -> Path:
    """The file beside `archive` naming the pyspark install it was written for."""
    return archive.with_suffix(".install")


def prune_archives(kept: Path, install: Path) -> list[Path]:
    """Removes the archives beside `kept` whose install is gone, is `install` (which `kept` now
    serves), or is not recorded (written before records were); returns them."""
    removed = []
    for archive in sorted(kept.parent.glob("spark-*.jsa")):
        record = install_record(archive)
        owner = Path(record.read_text().strip()) if record.is_file() else None
        if archive != kept and (owner is None or owner == install or not owner.is_dir()):
            archive.unlink(missing_ok=True)
            record.unlink(missing_ok=True)
            removed.append(archive)
    return removed


def _maps(archive: Path) -> bool:
    """Whether a session's JVM started on `archive`, sharing required, runs a job."""
    options = f"-Xshare:on -XX:SharedArchiveFile={archive} {QUIET_CLASS_ARCHIVE}"
    conf = {"spark.driver.extraJavaOptions": options}
    code = (
        "from spark_jobs.session import build_session; "
        f"build_session('local', 'class-archive-check', {conf!r}).range(1).count()"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _remove_abandoned_staging(folder: Path) -> None:
    """Removes the staging files (any install's) of archiving processes that are gone: a setup killed
    mid-way leaves its 186 MB file, named by its pid."""
    for staging in folder.glob("*.jsa.*.tmp"):
        pid = staging.suffixes[-2].lstrip(".")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            staging.unlink(missing_ok=True)


def main() -> None:
    """Writes the archive; a failure is a one-line warning, not a failed setup (the archive only makes
    sessions start sooner), so each setup tries again."""
    target = class_archive()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(target.parent)
        if target.is_file():
            if not install_record(target).is_file():  # written before records were
                install_record(target).write_text(f"{pyspark_install()}\n")
            return
        started = time.perf_counter()
        _write(target)
    except Exception as error:  # noqa: BLE001 - what failed is said, and setup goes on
        reason = first_line(str(error), type(error).__name__)
        print(
            f"sparkrec class archive: warning: not written ({reason}); Spark sessions start without it "
            "(about 7 s slower each)",
            file=sys.stderr,
        )
        return
    removed = prune_archives(target, pyspark_install())
    pruned = f"; {len(removed)} of installs gone or replaced removed" if removed else ""
    print(f"class archive: {target} written in {time.perf_counter() - started:.0f} s{pruned}")


def _write(target: Path) -> None:
    """A session of the workload in a JVM that archives its classes as it exits, into a staging file
    renamed into place once a JVM maps it."""
    staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    options = read_profile("local").get("spark.driver.extraJavaOptions", "")
    archiving = f"{options} -XX:ArchiveClassesAtExit={staging} {QUIET_CLASS_ARCHIVE}"
    folder = tempfile.mkdtemp(prefix="sparkrec-class-archive-")
    try:
        quiet = {"spark.driver.extraJavaOptions": archiving, "spark.ui.showConsoleProgress": "false"}
        spark = build_session("local", "sparkrec-class-archive", quiet)
        _workload(spark, folder)
        spark.stop()
        jvm = SparkContext._gateway.proc
        jvm.stdin.close()  # the gateway JVM exits on its stdin's end, writing the archive as it goes
        if jvm.wait(timeout=600) != 0 or not staging.is_file() or not _maps(staging):
            raise RuntimeError(f"the JVM wrote no usable {staging}; see its log")
        install_record(target).write_text(f"{pyspark_install()}\n")  # before the archive, for a pruning setup
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
