#!/usr/bin/env bash
# Fetches the JVM jars named in conf/jars.txt from Maven Central once into the jar cache.
# Spark sessions load them from there (spark_jobs/session.py); nothing resolves at run time.
set -euo pipefail
jars_file=$1 jar_dir=$2
mkdir -p "$jar_dir"
grep -vE '^\s*(#|$)' "$jars_file" | while read -r _name coordinates; do
  IFS=: read -r group artifact version <<<"$coordinates"
  [ -f "$jar_dir/$artifact-$version.jar" ] && continue
  echo "setup: fetching $coordinates"
  mvn -B -q dependency:copy -Dartifact="$coordinates" -DoutputDirectory="$jar_dir" -Dmdep.useBaseVersion=true
done
