#!/usr/bin/env bash
# Set up this machine for edgecnn (Debian/Ubuntu): system packages, then the Python package.
# Idempotent: installs only what is missing; safe to run before every command.
#   bash tools/setup.sh          # everything edgecnn and its tests need
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages, one per line in tools/apt-packages.txt (comments allowed).
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^\s*$/d' tools/apt-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "edgecnn setup: apt-get install ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Python package with its test extras (editable, so the checkout is what runs).
python3 -m pip install -q --disable-pip-version-check --progress-bar off -e '.[dev,tune,jetson]'
# ONNX -> TFLite (edgecnn.frameworks.convert): onnx2tf and tf-keras without their dependencies, whose pins
# would replace TensorFlow, numpy, onnx and LiteRT (pyproject.toml lists what they import instead).
python3 -m pip install -q --disable-pip-version-check --progress-bar off --no-deps onnx2tf==1.29.24 tf-keras==2.21.0
# TFLite model metadata (normalisation, labels; edgecnn.contract.tflite_metadata) through TFLite Support's generated
# schema: without its dependencies, whose protobuf and sounddevice pins the metadata reader does not need.
python3 -m pip install -q --disable-pip-version-check --progress-bar off --no-deps tflite-support==0.4.4
# The ncnn backend's converter (edgecnn.compile.ncnn runs its pnnx program): without its dependencies, since its
# wheel requires torch, which the program does not use.
python3 -m pip install -q --disable-pip-version-check --progress-bar off --no-deps pnnx==20261020
# pyenv installs console scripts behind shims that exist only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi

# Emulated ARM: arm64 sysroot, aarch64 wheels, qemu counting plugin (cached; seconds when present).
python3 -m edgecnn emulator setup > /dev/null
