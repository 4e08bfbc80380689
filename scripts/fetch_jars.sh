#!/usr/bin/env bash
# Fetches the JVM jars named in conf/jars.txt from Maven Central once into the jar cache.
# Spark sessions load them from there (spark_jobs/session.py); nothing resolves at run time.
# Each jar is fetched into a staging folder and moved in whole, so a cut download is never taken
# for a cached jar (one already cut short is fetched again).
set -euo pipefail
jars_file=$1 jar_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$jar_dir"
grep -vE '^\s*(#|$)' "$jars_file" | while read -r _name coordinates; do
  IFS=: read -r group artifact version <<<"$coordinates"
  jar=$jar_dir/$artifact-$version.jar
  "$here/complete_zip" "$jar" && continue
  echo "setup: fetching $coordinates"
  staging=$(mktemp -d "$jar_dir/.fetching.XXXXXX")
  mvn -B -q dependency:copy -Dartifact="$coordinates" -DoutputDirectory="$staging" -Dmdep.useBaseVersion=true \
    || { rm -rf "$staging"; exit 1; }
  "$here/complete_zip" "$staging/$(basename "$jar")"
  mv -f "$staging/$(basename "$jar")" "$jar"
  rm -rf "$staging"
done
