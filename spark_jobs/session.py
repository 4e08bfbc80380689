"""Builds every SparkSession of sparkrec from a named profile in conf/spark/.

A profile is a spark-defaults style file (`key value` per line) with three sparkrec keys:
`sparkrec.include` (another profile to start from), `sparkrec.jars` (names from conf/jars.txt, loaded
from the local jar cache that `make setup` fills) and `sparkrec.use_existing_session` (Databricks).

The same call works when Python starts the JVM (`sparkrec <stage>`, tests, notebooks run as scripts)
and under a plain `spark-submit spark_jobs/<stage>.py`, where the JVM is running before this code:
there the profile's cached jars join the driver's class loader before the SparkContext exists. Either
way the JVM's log goes to a file (conf/log4j2.properties), not the console: a run prints its own
summaries and progress, and says where its log went.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark
from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from rec_plugin.errors import LOG_FILE_ENV, InputError, note_interrupts
from rec_plugin.machine_cache import cache_root
from spark_jobs.jvm_console import start_without_warning

CONF_DIR = Path(os.environ.get("SPARKREC_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))
JAR_DIR = Path(os.environ.get("SPARKREC_JAR_DIR", cache_root() / "jars"))
# Keeps the JVM's class-sharing warnings off the console: a JVM whose archive another JDK build wrote
# runs without it, as a JVM without one does.
QUIET_CLASS_ARCHIVE = "-Xlog:cds=off -Xlog:cds+dynamic=off"
PROFILES = ("local", "rapids-explain", "rapids-gpu", "databricks")
LOG4J_CONF = CONF_DIR / "log4j2.properties"
# Where the JVM's log file goes: this variable's folder, else ./logs.
LOG_DIR_ENV = "SPARKREC_LOG_DIR"
# Set by spark-submit for the Python driver it starts: the JVM is already running.
SUBMITTED_ENV = "PYSPARK_GATEWAY_PORT"
# Per-operator code instead of whole-stage code, for stages of hundreds of expressions a row (the
# generator's draws, ingest's checks of ~40 fields): whole-stage code for the generator fails to
# compile (janino: an ERROR with a stack trace per job) and falls back to per-operator code at the
# same speed (bench/generate.py, 10M rows: 1.00x); ingest's compiles, but into methods the JIT runs
# 3x slower than per-operator code (2M Criteo lines checked and filtered: 110 s against 35 s).
WIDE_PROJECTIONS = {"spark.sql.codegen.wholeStage": "false"}


def read_profile(profile: str) -> dict[str, str]:
    """The profile's settings, its `sparkrec.include` chain resolved (later files win)."""
    path = CONF_DIR / "spark" / f"{profile}.conf"
    if not path.is_file():
        raise InputError(f"unknown Spark profile {profile!r}: expected one of {', '.join(PROFILES)}")
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            settings[key] = value.strip()
    included = settings.pop("sparkrec.include", None)
    return {**read_profile(included), **settings} if included else settings


def jar_paths(names: list[str], required: bool = True) -> list[Path]:
    """Cached jar files for the given names of conf/jars.txt; a missing jar is a setup error unless
    not `required` (under spark-submit on a cluster, --packages or --jars bring them)."""
    paths = []
    for line in (CONF_DIR / "jars.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and not line.startswith("#") and fields[0] in names:
            _group, artifact, version = fields[1].split(":")
            path = JAR_DIR / f"{artifact}-{version}.jar"
            if not path.is_file() and not required:
                continue
            if not path.is_file():
                raise InputError(f"{path} is missing: run `make setup` to fetch {fields[1]}")
            paths.append(path)
    return paths


def pyspark_install() -> Path:
    """The folder of the pyspark package this process imports: its jars are the JVM's class path."""
    return Path(pyspark.__file__).resolve().parent


def class_archive() -> Path:
    """The JDK class-data-sharing archive of the classes a session loads, for this pyspark install and
    this java (spark_jobs/class_archive.py writes it at `make setup`): a JVM started here maps it
    instead of loading and verifying each class. The JVM uses an archive only with the class path it
    was written with, each jar's size and modification time included, so each install (each
    checkout's venv, and a venv rebuilt at the same path) has its own."""
    home = os.environ.get("JAVA_HOME")
    java = Path(home, "bin", "java") if home else Path(shutil.which("java") or "java")
    binary = java.resolve()
    stat = binary.stat() if binary.is_file() else None
    install = pyspark_install()
    jars = sorted(
        (jar.name, status.st_size, status.st_mtime_ns)
        for jar in (install / "jars").glob("*.jar")
        for status in [jar.stat()]
    )
    identity = f"{pyspark.__version__} {install} {jars} {binary} {stat and (stat.st_size, stat.st_mtime_ns)}"
    return cache_root() / "class-archives" / f"spark-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.jsa"


def log_file(app_name: str) -> Path:
    """This run's JVM log: $SPARKREC_LOG_FILE if set, else <$SPARKREC_LOG_DIR or ./logs>/<app>-<time>.log."""
    if os.environ.get(LOG_FILE_ENV):
        return Path(os.environ[LOG_FILE_ENV]).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(os.environ.get(LOG_DIR_ENV, "logs")).resolve() / f"{app_name}-{stamp}-{os.getpid()}.log"
    os.environ[LOG_FILE_ENV] = str(path)  # for run_command's error line and child processes
    return path


def _submitted_settings() -> dict[str, str]:
    """The settings spark-submit passed to its JVM (its flags and --conf), less the app name."""
    SparkContext._ensure_initialized()
    given = dict(SparkConf().getAll())
    given.pop("spark.app.name", None)
    return given


def _start_jvm(settings: dict[str, str], log: Path) -> None:
    """Starts (or, under spark-submit, joins) the JVM before the SparkContext exists, so its log
    goes to `log` from the first line and the profile's jars are loadable."""
    submitted = SUBMITTED_ENV in os.environ
    log.parent.mkdir(parents=True, exist_ok=True)
    java_options = f"-Dlog4j2.configurationFile={LOG4J_CONF.as_uri()} -Dsparkrec.log.file={log}"
    archive = class_archive()
    if not submitted and archive.is_file():
        java_options += f" -XX:SharedArchiveFile={archive} {QUIET_CLASS_ARCHIVE}"
    settings["spark.driver.extraJavaOptions"] = " ".join(
        filter(None, [settings.get("spark.driver.extraJavaOptions"), java_options])
    )
    conf = SparkConf(loadDefaults=False).setAll(settings.items())
    if not submitted and SparkContext._gateway is None:
        gateway = start_without_warning(lambda stderr: launch_gateway(conf, popen_kwargs={"stderr": stderr}))
        SparkContext._ensure_initialized(gateway=gateway, conf=conf)
        return
    SparkContext._ensure_initialized(conf=conf)
    if not submitted:
        return
    jvm = SparkContext._jvm
    jvm.java.lang.System.setProperty("sparkrec.log.file", str(log))
    # The logger context of Spark's own classes (log4j keeps one per class loader).
    spark_loader = jvm.java.lang.Class.forName("org.apache.spark.SparkContext").getClassLoader()
    context = jvm.org.apache.logging.log4j.LogManager.getContext(spark_loader, False)
    context.setConfigLocation(jvm.java.io.File(str(LOG4J_CONF)).toURI())
    # spark-submit loaded Spark's default profile; a new SparkContext resets logging and, while Spark
    # believes its default is in force, reloads that default over ours. Tell it the default is gone.
    logging = jvm.java.lang.Class.forName("org.apache.spark.internal.Logging$").getField("MODULE$").get(None)
    getattr(logging, "org$apache$spark$internal$Logging$$defaultSparkLog4jConfig_$eq")(False)
    # spark-submit's driver runs in a class loader that takes more jars (Spark's MutableURLClassLoader).
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    for jar in filter(None, settings.get("spark.jars", "").split(",")):
        loader.addURL(jvm.java.io.File(jar).toURI().toURL())


def build_session(
    profile: str = "local", app_name: str = "sparkrec", extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """A SparkSession configured by `profile`; extra_conf overrides the profile's settings."""
    settings = {**read_profile(profile), **(extra_conf or {})}
    if settings.pop("sparkrec.use_existing_session", "false") == "true":
        active = SparkSession.getActiveSession()
        if active is None:
            raise RuntimeError(f"profile {profile!r} expects an existing Spark session (a notebook's)")
        return active
    if SUBMITTED_ENV in os.environ and SparkContext._active_spark_context is None:
        settings.update(_submitted_settings())  # what spark-submit was told (--master, --conf) wins
    jar_names = [n for n in settings.pop("sparkrec.jars", "").split(",") if n]
    if jar_names:  # beside any jars the caller names in spark.jars (e.g. sparkrec's SQL functions)
        named = [settings["spark.jars"]] if settings.get("spark.jars") else []
        cached = jar_paths(jar_names, required=SUBMITTED_ENV not in os.environ)
        settings["spark.jars"] = ",".join([*(str(p) for p in cached), *named])
    if settings.get("spark.driver.bindAddress") == "127.0.0.1":
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if SparkContext._active_spark_context is None:
        log = log_file(app_name)
        _start_jvm(settings, log)
        print(f"{app_name}: Spark's log goes to {log}", flush=True)
        # The master the JVM took (Spark's launcher runs local[*] where none is given). Local workers
        # run on this machine: the driver's Python (its venv's packages), not the first python3 on
        # PATH, unless PYSPARK_PYTHON names another; the SparkContext reads it as it starts.
        if SparkConf().get("spark.master", "").startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    note_interrupts()  # PySpark's SIGINT handler is set now: a command's Ctrl-C is one line
    return session


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Sets SQL settings for the duration of a block (one stage's tuning), then restores them."""
    saved = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
