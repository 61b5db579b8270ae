#!/usr/bin/env bash
# Fetch ONNX Runtime's shared library from its PyPI wheel (Debian does not
# package it) and print the ORT_DYLIB_PATH that `--features ort` needs.
#
#   scripts/fetch-onnxruntime.sh            # CPU build into .ort/
#   scripts/fetch-onnxruntime.sh --gpu      # onnxruntime-gpu (CUDA + TensorRT providers;
#                                           # needs the CUDA 13 libraries at run time)
#   scripts/fetch-onnxruntime.sh --arch aarch64   # the Arm (manylinux aarch64) build,
#                                           # for an Arm board or qemu-aarch64
#   ORT_VERSION=1.31.1 scripts/fetch-onnxruntime.sh --dest /opt/ort
#
# The version must match the `api-NN` feature of the `ort` crate in
# Cargo.toml (api-31 ⇔ ONNX Runtime 1.31.x).
set -euo pipefail

version="${ORT_VERSION:-1.31.1}"
package=onnxruntime
dest=.ort
arch=x86_64
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) package=onnxruntime-gpu; shift ;;
        --dest) dest="$2"; shift 2 ;;
        --arch) arch="$2"; shift 2 ;;
        *) echo "usage: $0 [--gpu] [--arch x86_64|aarch64] [--dest DIR]" >&2; exit 2 ;;
    esac
done
case "$arch" in
    x86_64|aarch64) ;;
    *) echo "--arch must be x86_64 or aarch64, not $arch" >&2; exit 2 ;;
esac

python=$(command -v python3 || command -v python)
out="$dest/$package-$version"
[[ "$arch" == x86_64 ]] || out="$out-$arch"
lib="$out/onnxruntime/capi/libonnxruntime.so.$version"
if [[ -f "$lib" ]]; then
    echo "ORT_DYLIB_PATH=$(realpath "$lib")"
    exit 0
fi
mkdir -p "$out/wheel"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --platform "manylinux_2_28_$arch" --python-version 3.11 \
    --dest "$out/wheel" "$package==$version" >&2
wheel=$(ls "$out"/wheel/*.whl | head -n 1)
# Unpack only the native libraries (the wheel is a zip; no unzip needed).
"$python" - "$wheel" "$out" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist()
             if n.startswith("onnxruntime/capi/libonnxruntime") and ".so" in n]
    if not names:
        sys.exit(f"{wheel}: no shared library inside")
    for n in names:
        z.extract(n, out)
PY
rm -rf "$out/wheel"
if [[ ! -f "$lib" ]]; then
    echo "$lib: not found in the $package $version wheel" >&2
    exit 1
fi
echo "ORT_DYLIB_PATH=$(realpath "$lib")"
