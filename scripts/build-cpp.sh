#!/usr/bin/env bash
# Build the illia C++ runtime (runtimes/cpp: libillia.a, illia-mc, illia-noise) and the example
# program (examples/cpp) into BUILD_DIR. One entry point; fetches what it needs.
#
#   bash scripts/build-cpp.sh [--ort-only | --no-ort] [--jobs N] BUILD_DIR
#
#   (default)   LibTorch (TorchScript + AOTInductor backends) + ONNX Runtime
#   --ort-only  ONNX Runtime only: no LibTorch at all (small binaries for services and apps)
#   --no-ort    LibTorch only (no header download; for machines without network)
#
# Where things come from:
#   * python: $PYTHON, else .venv/bin/python of this checkout (for the two paths below)
#   * LibTorch: torch.utils.cmake_prefix_path of that python's torch wheel
#   * libonnxruntime.so: that python's onnxruntime wheel (onnxruntime/capi/libonnxruntime.so.1.*),
#     or $ONNXRUNTIME_LIBRARY; linked through BUILD_DIR/onnxruntime/lib/libonnxruntime.so.1 ->
#     the wheel's file (the binaries' RPATH points there)
#   * ONNX Runtime headers: scripts/fetch-ort-headers.sh (Debian trixie's libonnxruntime-dev,
#     cached in .cache/ort-headers), or $ONNXRUNTIME_INCLUDE_DIR
#
# Exit status: 0 built; 2 usage; 3 the ONNX Runtime headers or library cannot be had (message
# says why; --no-ort still builds); 4 LibTorch missing; 1 the build itself failed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
usage() { echo "usage: bash scripts/build-cpp.sh [--ort-only | --no-ort] [--jobs N] BUILD_DIR" >&2; exit 2; }
die() { local code="$1"; shift; echo "build-cpp: $*" >&2; exit "$code"; }

MODE=full
JOBS="${JOBS:-2}"
BUILD=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ort-only) MODE=ort-only ;;
    --no-ort) MODE=no-ort ;;
    --jobs) [[ $# -ge 2 ]] || usage; JOBS="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "build-cpp: unknown option $1" >&2; usage ;;
    *) [[ -z "$BUILD" ]] || { echo "build-cpp: unexpected argument $1" >&2; usage; }; BUILD="$1" ;;
  esac
  shift
done
[[ -n "$BUILD" ]] || usage
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die 2 "--jobs needs a positive integer, got '$JOBS'"
command -v cmake >/dev/null || die 1 "cmake is not installed"
mkdir -p "$BUILD"
BUILD="$(cd "$BUILD" && pwd)"

PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || command -v "$PY" >/dev/null || die 1 "no python at '$PY' (set PYTHON=/path/to/python of a venv with torch / onnxruntime)"

ARGS=(-DCMAKE_BUILD_TYPE=Release -DILLIA_BUILD_EXAMPLES=ON)
if [[ "$MODE" != ort-only ]]; then
  TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)" ||
    die 4 "$PY cannot import torch (LibTorch comes from the torch wheel); use --ort-only for a build without it"
  ARGS+=(-DILLIA_WITH_TORCH=ON -DILLIA_WITH_AOTI=ON "-DCMAKE_PREFIX_PATH=$TORCH_PREFIX")
else
  ARGS+=(-DILLIA_WITH_TORCH=OFF -DILLIA_WITH_AOTI=OFF -UCMAKE_PREFIX_PATH)
fi

if [[ "$MODE" != no-ort ]]; then
  if [[ -n "${ONNXRUNTIME_INCLUDE_DIR:-}" ]]; then
    HEADERS="$ONNXRUNTIME_INCLUDE_DIR"
  else
    HEADERS="$(bash "$ROOT/scripts/fetch-ort-headers.sh")" || exit 3
  fi
  [[ -f "$HEADERS/onnxruntime_cxx_api.h" ]] || die 3 "no onnxruntime_cxx_api.h in $HEADERS"
  LIB="${ONNXRUNTIME_LIBRARY:-}"
  if [[ -z "$LIB" ]]; then
    CAPI="$("$PY" -c 'import os, onnxruntime; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null)" ||
      die 3 "$PY cannot import onnxruntime (its wheel ships libonnxruntime.so); pip install onnxruntime, or set ONNXRUNTIME_LIBRARY"
    LIB="$(ls "$CAPI"/libonnxruntime.so.1* 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$LIB" ]] || die 3 "no libonnxruntime.so.1* in $CAPI"
  fi
  [[ -f "$LIB" ]] || die 3 "ONNX Runtime library not found: $LIB"
  # Link and load through a SONAME symlink in the build dir (the wheel names its file .so.1.x.y).
  mkdir -p "$BUILD/onnxruntime/lib"
  ln -sfn "$LIB" "$BUILD/onnxruntime/lib/libonnxruntime.so.1"
  ln -sfn libonnxruntime.so.1 "$BUILD/onnxruntime/lib/libonnxruntime.so"
  ARGS+=(-DILLIA_WITH_ORT=ON "-DONNXRUNTIME_INCLUDE_DIR=$HEADERS"
         "-DONNXRUNTIME_LIBRARY=$BUILD/onnxruntime/lib/libonnxruntime.so")
else
  ARGS+=(-DILLIA_WITH_ORT=OFF)
fi

GEN=()
if [[ ! -f "$BUILD/CMakeCache.txt" ]] && command -v ninja >/dev/null; then GEN=(-G Ninja); fi
echo "build-cpp: configuring $MODE build in $BUILD" >&2
cmake -S "$ROOT/runtimes/cpp" -B "$BUILD" "${GEN[@]}" "${ARGS[@]}" >"$BUILD/configure.log" 2>&1 ||
  { tail -n 30 "$BUILD/configure.log" >&2; die 1 "cmake configure failed (full log: $BUILD/configure.log)"; }
cmake --build "$BUILD" -j "$JOBS" >"$BUILD/build.log" 2>&1 ||
  { tail -n 40 "$BUILD/build.log" >&2; die 1 "cmake build failed (full log: $BUILD/build.log)"; }
echo "build-cpp: built $BUILD/illia-mc, $BUILD/illia-noise, $BUILD/examples/illia_example ($MODE)" >&2
