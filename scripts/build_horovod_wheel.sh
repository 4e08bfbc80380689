#!/usr/bin/env bash
# Builds the Horovod wheel once per machine into the wheel cache (5-9 min on 2 cores), against the
# torch already installed in the venv: WHEEL_DIR is the torch pin's (the Makefile names it), since a
# wheel built against another torch fails at import. Built into a staging folder and moved in whole.
# Usage: build_horovod_wheel.sh VENV_PYTHON WHEEL_DIR
set -euo pipefail
python=$1 wheel_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
version=$(python3 "$here/pin.py" horovod)
built=$(ls "$wheel_dir"/horovod-"$version"-*.whl 2>/dev/null || true)
if [ -n "$built" ] && "$here/complete_zip" $built; then
  exit 0
fi
mkdir -p "$wheel_dir"
staging=$(mktemp -d "$wheel_dir/.building.XXXXXX")
constraint=$(mktemp)
trap 'rm -rf "$constraint" "$staging"' EXIT
echo "torch==$(python3 "$here/pin.py" torch)" >"$constraint"
echo "setup: building horovod $version (once per machine, several minutes)"
CXX="$here/cxx17" \
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
MAKEFLAGS="-j$(nproc)" \
  "$python" -m pip wheel --no-build-isolation --no-deps -c "$constraint" -w "$staging" "horovod==$version"
rm -f "$wheel_dir"/horovod-"$version"-*.whl
mv "$staging"/horovod-"$version"-*.whl "$wheel_dir"/
