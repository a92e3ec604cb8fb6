#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ API headers (onnxruntime_c_api.h, onnxruntime_cxx_api.h, ...) from
# Debian 13 (trixie)'s libonnxruntime-dev package, without touching the machine's apt setup:
# a private apt folder (own sources.list, state and cache) under the cache dir, `apt-get
# download`, then `dpkg-deb -x`. Only the headers are kept: the Debian library itself needs a
# newer glibc; the build links the libonnxruntime.so of the `onnxruntime` pip wheel instead
# (ORT's C API is versioned: OrtGetApiBase()->GetApi(ORT_API_VERSION) with the headers' older
# API version works against a newer library).
#
#   bash scripts/fetch-ort-headers.sh [DEST]     # default DEST: .cache/ort-headers
#
# Prints DEST (the folder holding onnxruntime_cxx_api.h) on stdout. A second call finds the
# headers there and fetches nothing. Exit status 3 when they cannot be fetched (no network,
# no apt-get/dpkg-deb); the message says why.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/.cache/ort-headers}"
SUITE="${ILLIA_ORT_DEBIAN_SUITE:-trixie}"
MIRROR="${ILLIA_ORT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

WORK=""
fail() { echo "fetch-ort-headers: $*" >&2; [[ -z "$WORK" ]] || rm -rf "$WORK"; exit 3; }

if [[ -f "$DEST/onnxruntime_cxx_api.h" && -f "$DEST/onnxruntime_c_api.h" ]]; then
  echo "$DEST"
  exit 0
fi
command -v apt-get >/dev/null || fail "apt-get is not installed (needed to download libonnxruntime-dev)"
command -v dpkg-deb >/dev/null || fail "dpkg-deb is not installed (needed to unpack libonnxruntime-dev)"

WORK="$(dirname "$DEST")/ort-apt"
rm -rf "$WORK"
mkdir -p "$WORK/etc/sources.list.d" "$WORK/etc/preferences.d" "$WORK/state/lists/partial" \
         "$WORK/cache/archives/partial" "$WORK/download"
echo "deb $MIRROR $SUITE main" > "$WORK/etc/sources.list"
APT=(apt-get -q
     -o "Dir::Etc::sourcelist=$WORK/etc/sources.list"
     -o "Dir::Etc::sourceparts=$WORK/etc/sources.list.d"
     -o "Dir::Etc::preferencesparts=$WORK/etc/preferences.d"
     -o "Dir::State=$WORK/state"
     -o "Dir::State::status=/dev/null"
     -o "Dir::Cache=$WORK/cache"
     -o "APT::Architecture=amd64"
     -o "Debug::NoLocking=1"
     -o "APT::Sandbox::User=$(id -un)")
echo "fetch-ort-headers: downloading libonnxruntime-dev from $MIRROR $SUITE (private apt dir $WORK)" >&2
# apt-get update exits 0 when a source cannot be reached (it only warns): look at its log too.
if ! "${APT[@]}" update >"$WORK/update.log" 2>&1 || grep -qE '^(Err:|W: Failed to fetch|E: )' "$WORK/update.log"; then
  fail "apt-get update against $MIRROR $SUITE failed (no network?): $(grep -E '^(Err:|W: Failed|E: )' "$WORK/update.log" | head -n 1)"
fi
(cd "$WORK/download" && "${APT[@]}" download libonnxruntime-dev >"$WORK/download.log" 2>&1) ||
  fail "apt-get download libonnxruntime-dev failed: $(tail -n 1 "$WORK/download.log")"
DEB="$(ls "$WORK"/download/libonnxruntime-dev_*.deb 2>/dev/null | head -n 1)"
[[ -n "$DEB" ]] || fail "apt-get download produced no libonnxruntime-dev .deb"
dpkg-deb -x "$DEB" "$WORK/x"
HDR="$(dirname "$(find "$WORK/x" -name onnxruntime_cxx_api.h | head -n 1)")"
[[ -f "$HDR/onnxruntime_cxx_api.h" && -f "$HDR/onnxruntime_c_api.h" ]] ||
  fail "$(basename "$DEB") holds no onnxruntime_cxx_api.h / onnxruntime_c_api.h"
TMP="$DEST.tmp.$$"
rm -rf "$TMP"
mkdir -p "$TMP"
cp "$HDR"/*.h "$TMP"/
basename "$DEB" > "$TMP/SOURCE"
rm -rf "$DEST"
mv "$TMP" "$DEST"
rm -rf "$WORK"
echo "fetch-ort-headers: $(ls "$DEST" | wc -l) files from $(cat "$DEST/SOURCE") -> $DEST" >&2
echo "$DEST"
