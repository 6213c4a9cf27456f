#!/usr/bin/env bash
# One set-up for everything (tests, demo, benchmarks, training): creates .venv,
# installs the pinned dependencies (ROS 2 Kilted wheels with Fast DDS, torch 2.13.0
# CPU, OpenCV, rosbags, colcon, ...), builds the interface packages in msg/ into it, and
# installs this project editable. Idempotent: a stamp of the inputs makes a second
# run a no-op that takes well under a second. Every failing step says which it was.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DERAIN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
STAMP="$VENV/.derain_setup_stamp"

step=""
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "setup.sh: FAILED at step: ${step} (exit $rc). See the output above." >&2; fi' EXIT

say() { printf '[setup] %s\n' "$*"; }

cd "$ROOT"

# Everything the environment depends on; a change to any of these re-runs the set-up.
inputs_hash() {
  cat requirements/*.txt setup.py setup.cfg package.xml tools/setup.sh \
      msg/pypi_wheels_compat.cmake msg/*/CMakeLists.txt msg/*/package.xml msg/*/msg/*.msg \
    | sha256sum | cut -d' ' -f1
}

step="check python"
if ! command -v "$PY" >/dev/null 2>&1; then
  if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    PY=python3
  else
    echo "setup.sh: Python 3.11 is needed (the ROS 2 Kilted wheels and the torch 2.13.0 wheel are cp311)." >&2
    exit 1
  fi
fi
for tool in cmake make gcc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup.sh: '$tool' is needed to build the interfaces in msg/." >&2; exit 1; }
done

want="$(inputs_hash)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

step="create virtual environment"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

step="install pinned dependencies"
say "installing pinned dependencies (first time: about a minute)"
"${PIP[@]}" install -q -c requirements/constraints.txt -r requirements/ros.txt -r requirements/python.txt

step="build interface packages (msg/)"
export VIRTUAL_ENV="$VENV"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
for pkg in event_camera_msgs dv_ros2_msgs; do
  pkg_hash="$(cat msg/pypi_wheels_compat.cmake msg/$pkg/CMakeLists.txt msg/$pkg/package.xml msg/$pkg/msg/*.msg | sha256sum | cut -d' ' -f1)"
  pkg_stamp="$VENV/share/$pkg/.derain_build_stamp"
  if [ -f "$pkg_stamp" ] && [ "$(cat "$pkg_stamp")" = "$pkg_hash" ]; then
    continue
  fi
  say "building $pkg into the environment"
  step="build $pkg (cmake; log in build/msg/$pkg.log)"
  mkdir -p build/msg
  rm -rf "build/msg/$pkg"
  {
    cmake -S "msg/$pkg" -B "build/msg/$pkg" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
    && cmake --build "build/msg/$pkg" -j "$(nproc)" \
    && cmake --install "build/msg/$pkg"
  } >"build/msg/$pkg.log" 2>&1 || { tail -30 "build/msg/$pkg.log" >&2; exit 1; }
  echo "$pkg_hash" >"$pkg_stamp"
done

step="install derain_ros (editable)"
say "installing derain_ros editable"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .

step="check the environment"
"$VENV/bin/python" - <<'PYEOF'
import importlib
for name in ("rclpy", "event_camera_msgs.msg", "dv_ros2_msgs.msg", "sensor_msgs.msg", "torch",
             "cv2", "rosbags", "safetensors", "numba", "colcon_core", "colcon_ros",
             "derain_ros", "derain_training"):
    importlib.import_module(name)
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
PYEOF

echo "$want" >"$STAMP"
say "environment ready: $VENV"
