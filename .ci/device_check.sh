#!/usr/bin/env bash
# Device-side check: a second venv with only what an edge Linux device installs (numpy<2, tflite-runtime 2.14,
# typer, flatbuffers, tflite schema + this project with --no-deps) must run `toolchain bench` and
# `toolchain verify --candidate X.tflite --dataset npz:...` without TensorFlow.
#
# The model + npz fixture is made beforehand in the host venv (tests/test_device.py make-fixture).
# Environment: HOST_PYTHON (default .venv/bin/python), DEVICE_VENV (default .venv-device), DEVICE_FIXTURE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST_PYTHON="${HOST_PYTHON:-.venv/bin/python}"
DEVICE_VENV="${DEVICE_VENV:-.venv-device}"
FIXTURE="${DEVICE_FIXTURE_DIR:-$(mktemp -d)}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 TF_CPP_MIN_LOG_LEVEL=2

echo "-- device venv: $DEVICE_VENV (numpy<2, tflite-runtime==2.14.*, typer, flatbuffers, tflite; project --no-deps)"
if [ ! -x "$DEVICE_VENV/bin/python" ]; then
  python3 -m venv "$DEVICE_VENV"
fi
"$DEVICE_VENV/bin/pip" install -q "numpy<2" "tflite-runtime==2.14.*" "typer>=0.29,<1" "flatbuffers>=23.5" "tflite>=2.10"
"$DEVICE_VENV/bin/pip" install -q --no-deps -e .

echo "-- host-only libraries must be absent on the device"
"$DEVICE_VENV/bin/python" - <<'PY'
import importlib.util, sys
present = [m for m in ("tensorflow", "keras", "sklearn", "matplotlib", "ai_edge_litert")
           if importlib.util.find_spec(m) is not None]
if present:
    sys.exit("device venv must not contain: " + ", ".join(present))
import numpy, tflite_runtime
print(f"numpy {numpy.__version__}, tflite-runtime {tflite_runtime.__version__}: no TensorFlow")
PY
"$DEVICE_VENV/bin/toolchain" --help >/dev/null

echo "-- fixture (host venv): small int8 CNN + digits test npz -> $FIXTURE"
"$HOST_PYTHON" tests/test_device.py make-fixture "$FIXTURE" 2>&1 | grep -v -E "^(W0000|I0000|E0000|WARNING)" | tail -n 3 || true
test -s "$FIXTURE/model_int8.tflite"

echo "-- device: toolchain bench"
"$DEVICE_VENV/bin/toolchain" bench "$FIXTURE/model_int8.tflite" --runtime tflite-runtime --runs 100
echo "-- device: toolchain verify --candidate (vs ground truth)"
"$DEVICE_VENV/bin/toolchain" verify --candidate "$FIXTURE/model_int8.tflite" \
  --dataset "npz:$FIXTURE/digits_test.npz" --min-accuracy 0.85 --runs 50 --output "$FIXTURE/device_verify" --force

echo "-- device: report values checked against the host's independent reference accuracy"
"$HOST_PYTHON" tests/test_device.py check "$DEVICE_VENV/bin/python" "$FIXTURE" tflite-runtime
echo "device check: OK"
