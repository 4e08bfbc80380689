#!/usr/bin/env bash
# Builds the Horovod wheel once per machine into the wheel cache (5-9 min on 2 cores), against the
# torch already installed in the venv. Usage: build_horovod_wheel.sh VENV_PYTHON WHEEL_DIR
set -euo pipefail
python=$1 wheel_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
version=$(python3 "$here/pin.py" horovod)
if ls "$wheel_dir"/horovod-"$version"-*.whl >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$wheel_dir"
constraint=$(mktemp)
trap 'rm -f "$constraint"' EXIT
echo "torch==$(python3 "$here/pin.py" torch)" >"$constraint"
echo "setup: building horovod $version (once per machine, several minutes)"
CXX="$here/cxx17" \
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
MAKEFLAGS="-j$(nproc)" \
  "$python" -m pip wheel --no-build-isolation --no-deps -c "$constraint" -w "$wheel_dir" "horovod==$version"
