"""File operations through Hadoop's FileSystem, so paths work alike on local disk, DBFS, S3 or HDFS."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rec_plugin.errors import InputError

_TABLE_THREADS = 8


def _fs_and_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def qualified(spark: SparkSession, path: str) -> str:
    """The fully qualified URI of a path (file:/..., s3a://...), as Spark's input_file_name gives it."""
    fs, hadoop_path = _fs_and_path(spark, path)
    return str(fs.makeQualified(hadoop_path).toString())


def is_local_master(spark: SparkSession) -> bool:
    """Spark runs its tasks on this host (local, local[n], local-cluster): they share its disk."""
    return spark.sparkContext.master.startswith("local")


def executor_lookup(spark: SparkSession, location: str) -> str | None:
    """None when a Spark task finds `location` (a path, or a URL of a file system fsspec knows); else
    why not: it is absent there, or the task's error in looking (a file system the executor lacks)."""

    def look(_: Iterator[int]) -> Iterator[str]:
        try:
            import fsspec

            filesystem, path = fsspec.core.url_to_fs(location)
            yield "" if filesystem.exists(path) else "absent there"
        except Exception as error:  # noqa: BLE001 - said in the driver's one line, not a task's trace
            yield f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"

    [found] = spark.sparkContext.parallelize([0], 1).mapPartitions(look).collect()
    return found or None


def require_seen_by_executors(spark: SparkSession, location: str, what: str) -> None:
    """On a cluster, tasks on the executors read `location` after the driver has: one they do not
    see (on the driver's own disk, its local /tmp) is refused in one line before the work, not found
    missing in a task's trace. A local master's tasks share the driver's disk."""
    if is_local_master(spark):
        return
    missing = executor_lookup(spark, location)
    if missing is not None:
        raise InputError(_unseen(what, location, missing))


def require_folder_shared_with_executors(spark: SparkSession, folder: str, what: str) -> None:
    """As require_seen_by_executors, for a folder the executors use: they look for a file the driver
    has just written there (a copy of the folder on an executor's own disk, which a failed run
    leaves, would pass a look for the folder), before the driver changes anything else in it; a
    folder made for the look and refused goes again."""
    if is_local_master(spark):
        return
    import fsspec

    filesystem, path = fsspec.core.url_to_fs(folder)
    name = f".sparkrec-probe-{uuid.uuid4().hex}"
    probe, probe_path = f"{folder.rstrip('/')}/{name}", f"{path.rstrip('/')}/{name}"
    made = not filesystem.exists(path)
    try:
        filesystem.makedirs(path, exist_ok=True)
        filesystem.pipe_file(probe_path, b"")
    except Exception as error:  # noqa: BLE001 - a store's refusal, said in one line
        raise InputError(f"cannot write into {what} {folder}: {type(error).__name__}: {error}") from None
    try:
        missing = executor_lookup(spark, probe)
    finally:
        filesystem.rm_file(probe_path)
    if missing is not None:
        if made:
            filesystem.rm(path, recursive=True)
        raise InputError(_unseen(what, folder, missing))


def _unseen(what: str, location: str, missing: str) -> str:
    return (
        f"the executors do not see {what} {location}, which the driver sees ({missing}): on a cluster "
        "give a location every node reads and writes (hdfs://, s3a://, abfs://, a mount they share)"
    )


def raw_path(spark: SparkSession, path: str) -> str:
    """The percent-encoded path part of a path's URI, as Spark's input_file_name() writes it."""
    _, hadoop_path = _fs_and_path(spark, path)
    return str(hadoop_path.toUri().getRawPath())


def list_files(spark: SparkSession, directory: str) -> list[str]:
    """Data files directly under a directory, sorted (Spark's _SUCCESS and hidden files skipped)."""
    fs, hadoop_path = _fs_and_path(spark, directory)
    names = [status.getPath().getName() for status in fs.listStatus(hadoop_path) if status.isFile()]
    return sorted(n for n in names if not n.startswith(("_", ".")))


def rename(spark: SparkSession, source: str, target: str) -> None:
    fs, source_path = _fs_and_path(spark, source)
    _, target_path = _fs_and_path(spark, target)
    fs.mkdirs(target_path.getParent())
    if not fs.rename(source_path, target_path):
        raise OSError(f"could not rename {source} to {target}")


def delete(spark: SparkSession, path: str) -> None:
    fs, hadoop_path = _fs_and_path(spark, path)
    fs.delete(hadoop_path, True)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Writes a small text file (a report, a model description) to any Hadoop file system."""
    fs, hadoop_path = _fs_and_path(spark, path)
    stream = fs.create(hadoop_path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def list_files_recursive(spark: SparkSession, directory: str) -> list[str]:
    """Data files anywhere below a directory, as sorted paths relative to it; as Spark lists a table's
    folder, no file or folder whose name starts with `_` or `.` (a notebook's .ipynb_checkpoints, the
    _temporary files of a write still running or killed)."""
    fs, hadoop_path = _fs_and_path(spark, directory)
    root = str(fs.makeQualified(hadoop_path).toString()).rstrip("/") + "/"
    files = fs.listFiles(hadoop_path, True)
    relative = []
    while files.hasNext():
        path = str(files.next().getPath().toString())[len(root) :]
        if not any(part.startswith(("_", ".")) for part in path.split("/")):
            relative.append(path)
    return sorted(relative)


def read_text(spark: SparkSession, path: str) -> str:
    fs, hadoop_path = _fs_and_path(spark, path)
    if fs.getFileStatus(hadoop_path).isDirectory():  # Hadoop's open would end in a Java trace
        raise InputError(f"{path} is a folder, not a file")
    stream = fs.open(hadoop_path)
    try:
        reader = spark.sparkContext._jvm.java.io.BufferedReader(
            spark.sparkContext._jvm.java.io.InputStreamReader(stream, "UTF-8")
        )
        return "\n".join(iter(reader.readLine, None))
    finally:
        stream.close()


def first_line(spark: SparkSession, path: str) -> str | None:
    """A text file's first line (decompressed by its extension's codec, as Spark reads it), without its
    line end; None for an empty file."""
    jvm = spark.sparkContext._jvm
    fs, hadoop_path = _fs_and_path(spark, path)
    stream = fs.open(hadoop_path)
    try:
        codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(
            spark.sparkContext._jsc.hadoopConfiguration()
        ).getCodec(hadoop_path)
        text = codec.createInputStream(stream) if codec is not None else stream
        line = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(text, "UTF-8")).readLine()
        return None if line is None else str(line)
    finally:
        stream.close()


def save_tables(tables: dict[str, DataFrame], path: str, folder: str) -> dict[str, str]:
    """Writes one Delta table per key under path/folder/<key>, concurrently (each commit is mostly
    driver-side latency); returns each key's location relative to `path`."""
    locations = {key: f"{folder}/{key}" for key in tables}
    with ThreadPoolExecutor(_TABLE_THREADS) as pool:
        jobs = [
            pool.submit(table.write.format("delta").mode("overwrite").save, f"{path}/{locations[key]}")
            for key, table in tables.items()
        ]
        for job in jobs:
            job.result()
    return locations


def read_delta(spark: SparkSession, location: str, version: int | None = None) -> DataFrame:
    """The Delta table at `location`, at `version` (None: the latest)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(location)


def load_tables(
    spark: SparkSession, locations: dict[str, str], path: str, pins: dict[str, int | None] | None = None
) -> dict[str, DataFrame]:
    """The Delta tables save_tables wrote, opened concurrently; a table whose location `pins` names is
    read at that Delta version (the one a fitted schema recorded), the others at their latest."""
    pins = pins or {}

    def open_table(relative: str) -> DataFrame:
        return read_delta(spark, f"{path}/{relative}", pins.get(relative))

    with ThreadPoolExecutor(_TABLE_THREADS) as pool:
        opened = {key: pool.submit(open_table, rel) for key, rel in locations.items()}
        return {key: job.result() for key, job in opened.items()}


# Characters that make Spark's file reader glob a path instead of reading it as named.
_GLOB_CHARACTERS = re.compile(r"[{}\[\]*?\\]")


def distinct_strings(spark: SparkSession, table: str, column: str) -> set[str]:
    """The non-null values of a string column of a Delta table with per-file statistics on it
    (ROW_KEY_STATISTICS), reading only the data files those statistics leave open, so the cost grows
    with the files, not the rows: a file whose minimum and maximum agree holds that value alone (a
    value cut short in statistics, past 32 characters, never agrees), one whose null count is its row
    count holds none. The table is read whole, at the snapshot's version, where a file to read has
    deletion vectors, the column is a partition column, columns are mapped or a path would glob."""
    jvm = spark.sparkContext._jvm
    snapshot = jvm.org.apache.spark.sql.delta.DeltaLog.forTableWithSnapshot(spark._jsparkSession, table)._2()
    if snapshot.version() < 0:
        raise InputError(f"{table} is not a Delta table")
    bounds_type, counts_type = f"struct<`{column}`: string>", f"struct<`{column}`: long>"
    stats_type = f"struct<numRecords: long, nullCount: {counts_type}, "
    stats_type += f"minValues: {bounds_type}, maxValues: {bounds_type}>"
    files = DataFrame(snapshot.allFiles().toDF(), spark).select(
        "path", F.col("deletionVector").isNotNull(), F.from_json("stats", stats_type)
    )
    values: set[str] = set()
    open_files: list[str] = []
    read_whole_table = False
    for path, has_deletion_vector, stats in files.collect():
        low = stats and stats.minValues and stats.minValues[column]
        high = stats and stats.maxValues and stats.maxValues[column]
        nulls = stats and stats.nullCount and stats.nullCount[column]
        if low is not None and low == high and not has_deletion_vector:
            values.add(low)
        elif not (stats and nulls is not None and nulls == stats.numRecords):
            open_files.append(path)
            read_whole_table |= has_deletion_vector
    if not open_files:
        return values
    metadata = snapshot.metadata()
    data_path = str(snapshot.deltaLog().dataPath())
    paths = [
        str(jvm.org.apache.spark.sql.delta.util.DeltaFileOperations.absolutePath(data_path, p))
        for p in open_files
    ]
    read_whole_table |= (
        metadata.columnMappingMode().name() != "none"
        or metadata.partitionColumns().contains(column)
        or any(_GLOB_CHARACTERS.search(p) for p in [data_path, *paths])
    )
    if read_whole_table:
        rows = spark.read.format("delta").option("versionAsOf", snapshot.version()).load(table)
    else:
        rows = spark.read.schema(f"`{column}` string").option("basePath", data_path).parquet(*paths)
    values.update(row[0] for row in rows.select(column).distinct().collect() if row[0] is not None)
    return values


def exists(spark: SparkSession, path: str) -> bool:
    fs, hadoop_path = _fs_and_path(spark, path)
    return bool(fs.exists(hadoop_path))


_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def _latest_commit(spark: SparkSession, path: str) -> int | None:
    """The newest commit in a table's _delta_log, from one directory listing (no Spark job: asking
    Delta's history costs a query per table); None when there is no log."""
    fs, log = _fs_and_path(spark, f"{path}/_delta_log")
    if not fs.exists(log):
        return None
    names = (status.getPath().getName() for status in fs.listStatus(log))
    commits = [int(match.group(1)) for name in names if (match := _COMMIT_FILE.match(name))]
    return max(commits) if commits else None


def has_commit(spark: SparkSession, path: str) -> bool:
    """Whether `path` holds a Delta table with a commit: a first write killed before its commit leaves
    a `_delta_log` folder with none, which Delta reads as no table and writes as a new one."""
    return _latest_commit(spark, path) is not None


# What a first Delta write leaves before its commit: data files named as Delta names them (and their
# checksums) in partition folders, maybe a _delta_log folder without a commit; no _SUCCESS, no
# _temporary. Another writer's part files (pyarrow's part-0.parquet) are not taken for these.
_UNCOMMITTED_FILE = re.compile(
    r"^[.]?part-[0-9]{5}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-c[0-9]{3}"
    r"([.][a-z0-9]+)?[.]parquet([.]crc)?$"
)
_PARTITION_FOLDER = re.compile(r"^[^=_.][^=]*=.*")


def _only_uncommitted_files(fs: Any, folder: Any) -> bool:
    for status in fs.listStatus(folder):
        name = status.getPath().getName()
        if name == "_delta_log" or (status.isFile() and _UNCOMMITTED_FILE.match(name)):
            continue
        if not (status.isDirectory() and _PARTITION_FOLDER.match(name)):
            return False
        if not _only_uncommitted_files(fs, status.getPath()):
            return False
    return True


def _uncommitted_write(spark: SparkSession, path: str) -> bool:
    """Whether `path` is a folder of only what a first Delta write killed before its commit left."""
    fs, hadoop_path = _fs_and_path(spark, path)
    if has_commit(spark, path) or not fs.exists(hadoop_path):
        return False
    return bool(fs.getFileStatus(hadoop_path).isDirectory()) and _only_uncommitted_files(fs, hadoop_path)


def holds_table(spark: SparkSession, path: str, role: str) -> bool:
    """Whether `path` holds a Delta table to write into (a commit). Nothing there, or only what a first
    write killed before its commit left, is no table: writing makes one, and Delta reads none of the
    files its log does not name. Any other folder is refused in one line: it is not a stage's to write."""
    if has_commit(spark, path):
        return True
    if not exists(spark, path) or _uncommitted_write(spark, path):
        return False
    raise InputError(f"{role} {path} is not a Delta table: choose another path")


def delta_version(spark: SparkSession, path: str, role: str, version: int | None = None) -> int:
    """`version` (default: the latest) of the Delta table at `path`, checked to exist; `role` says
    what the table is for the error line ("bronze table", "features table")."""
    if not exists(spark, path):
        raise InputError(f"{role} {path} does not exist")
    latest = _latest_commit(spark, path)
    if latest is None:
        raise InputError(f"{role} {path} is not a Delta table")
    if version is not None and not 0 <= version <= latest:
        raise InputError(f"{role} {path} has versions 0 to {latest}, not {version}")
    return latest if version is None else version


def delta_versions(spark: SparkSession, path: str, tables: list[str]) -> dict[str, int]:
    """The latest Delta version of each table under `path` (relative locations)."""
    return {t: delta_version(spark, f"{path}/{t}", "table") for t in tables}


def partition_files(table: DataFrame, column: str) -> dict[str, list[str]]:
    """A table's files by the value of a partition column, from its file list alone (a Delta table
    answers from its log: no data is read)."""
    pattern = re.compile(rf"/{re.escape(column)}=([^/]*)/")
    files: dict[str, list[str]] = {}
    for name in table.inputFiles():
        if match := pattern.search(name):
            files.setdefault(match.group(1), []).append(name)
    return files


def partition_values(table: DataFrame, column: str) -> set[str]:
    """The values of a partition column that a table's files hold (partition_files)."""
    return set(partition_files(table, column))


@contextmanager
def new_table_removed_on_failure(spark: SparkSession, path: str) -> Iterator[None]:
    """A write that fails leaves no half-made table behind: a table (or folder) that did not exist
    before the block is deleted when the block raises; over a killed first write's files, only the
    log this write made goes (the folder is left as it was found). An existing Delta table is safe: a
    failed commit changes nothing."""
    existed = exists(spark, path)
    uncommitted = existed and _uncommitted_write(spark, path)
    try:
        yield
    except BaseException:
        if not existed and exists(spark, path):
            delete(spark, path)
        elif uncommitted and has_commit(spark, path):
            delete(spark, f"{path}/_delta_log")
        raise


@contextmanager
def table_restored_on_failure(spark: SparkSession, path: str) -> Iterator[None]:
    """A block that raises leaves the table at `path` as it found it: one it made is deleted
    (new_table_removed_on_failure), one it committed to is restored to the version before (the stage is
    the table's one writer), so that a stage writing two tables (ingest's bronze and rejects) never
    leaves one new beside the other old. A restore that fails is said, and the block's error raised."""
    before = _latest_commit(spark, path)
    with new_table_removed_on_failure(spark, path):
        try:
            yield
        except BaseException:
            if before is not None and _latest_commit(spark, path) != before:
                try:
                    DeltaTable.forPath(spark, path).restoreToVersion(before)
                except Exception as error:  # noqa: BLE001 - the block's error is the one to raise
                    print(f"could not restore {path} to version {before}: {error}", file=sys.stderr)
            raise
