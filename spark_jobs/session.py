"""Builds every SparkSession of sparkrec from a named profile in conf/spark/.

A profile is a spark-defaults style file (`key value` per line) with three sparkrec keys:
`sparkrec.include` (another profile to start from), `sparkrec.jars` (names from conf/jars.txt, loaded
from the local jar cache that `make setup` fills) and `sparkrec.use_existing_session` (Databricks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

CONF_DIR = Path(os.environ.get("SPARKREC_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))
JAR_DIR = Path(os.environ.get("SPARKREC_JAR_DIR", Path.home() / ".cache" / "sparkrec" / "jars"))
PROFILES = ("local", "rapids-explain", "rapids-gpu", "databricks")


def read_profile(profile: str) -> dict[str, str]:
    """The profile's settings, its `sparkrec.include` chain resolved (later files win)."""
    path = CONF_DIR / "spark" / f"{profile}.conf"
    if not path.is_file():
        raise ValueError(f"unknown Spark profile {profile!r}: expected one of {', '.join(PROFILES)}")
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            settings[key] = value.strip()
    included = settings.pop("sparkrec.include", None)
    return {**read_profile(included), **settings} if included else settings


def jar_paths(names: list[str]) -> list[Path]:
    """Cached jar files for the given names of conf/jars.txt; a missing jar is a setup error."""
    paths = []
    for line in (CONF_DIR / "jars.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and not line.startswith("#") and fields[0] in names:
            _group, artifact, version = fields[1].split(":")
            path = JAR_DIR / f"{artifact}-{version}.jar"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run `make setup` to fetch {fields[1]}")
            paths.append(path)
    return paths


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
    jar_names = [n for n in settings.pop("sparkrec.jars", "").split(",") if n]
    if jar_names:  # beside any jars the caller names in spark.jars (e.g. sparkrec's SQL functions)
        named = [settings["spark.jars"]] if settings.get("spark.jars") else []
        settings["spark.jars"] = ",".join([*(str(p) for p in jar_paths(jar_names)), *named])
    if settings.get("spark.driver.bindAddress") == "127.0.0.1":
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


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
