// The artifact digest (manifest field `digest`), computed exactly as the Python side does
// (illia_export/artifact/digest.py): "sha256:<hex>" of the graph and weight bytes without the
// embedded manifest. A Predictor checks it on load, so a corrupted or modified artifact (a
// flipped weight byte) is refused instead of giving wrong numbers.
//
//   onnx:        the ModelProto's top-level protobuf fields except metadata_props (field 14),
//                as written, in file order
//   torchscript, pt2, aoti: every zip member except extra/illia_manifest.json,
//                .data/serialization_id and *.debug_pkl, sorted by name without the archive's
//                top folder, each hashed as len(name) (8 bytes LE), name, len(data) (8 bytes
//                LE), data; an AOTInductor *_metadata.json without its manifest entry, as
//                Python's json.dumps(sort_keys=True)
//
// Members are streamed in bounded pieces (a member larger than recorded is refused; no member
// is held in memory except a metadata JSON, bounded to 64 MiB).
#pragma once

#include <cstdint>
#include <string>

#include "illia/manifest.h"

namespace illia {

/// SHA-256 (FIPS 180-4), streaming.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  /// The hex digest (64 characters); the object is spent after this.
  std::string hex();

 private:
  void block(const unsigned char* p);
  uint32_t h_[8];
  unsigned char buf_[64];
  size_t used_ = 0;
  uint64_t bits_ = 0;
};

/// "sha256:<hex>" of the artifact at `path` as manifest format `format` (onnx, torchscript,
/// pt2, aoti). Throws ArtifactError when the file cannot be read as that format.
std::string compute_digest(const std::string& path, const std::string& format);

/// Check the artifact against `manifest.digest`. Throws ArtifactError when it differs, and when
/// the manifest records none (unless `allow_missing`); an ORT-format (.ort) file is not checked
/// (it keeps the .onnx file's manifest and digest, as in the Python runtime).
void verify_digest(const std::string& path, const Manifest& manifest, bool allow_missing = false);

}  // namespace illia
