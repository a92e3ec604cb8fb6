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
// Scheme 2 (manifest digest_scheme 2, every current export): digest = "sha256:" + hex(SHA-256(
// "illia-digest-v2\n" + G + "\n" + C)) with G the graph digest above and C the canonical JSON
// of the manifest without digest, validation and extra (keys sorted, "," and ":" separators,
// ASCII escapes, numbers as written): reordering the noise list or swapping the generator fails
// it. Schemes 1/absent check nothing of the manifest and are refused (--no-digest-check runs
// such a file unchecked).
//
// Members are streamed in bounded pieces (a member larger than recorded is refused; no member
// is held in memory except a metadata JSON, bounded to 64 MiB).
#pragma once

#include <cstdint>
#include <string>

#include "illia/json.h"
#include "illia/manifest.h"

namespace illia {

/// The scheme-2 canonical JSON of a manifest object (without digest, validation, extra):
/// Python's json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True) for a
/// manifest Python wrote (numbers keep the lexeme they were written with).
std::string canonical_manifest_json(const json::Value& root);

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
/// pt2, aoti): the graph digest G. Throws ArtifactError when the file cannot be read as that format.
std::string compute_digest(const std::string& path, const std::string& format);

/// The scheme-2 digest: G combined with the manifest's canonical JSON.
std::string compute_digest_v2(const std::string& path, const Manifest& manifest);

/// Check the artifact against `manifest.digest`. Throws ArtifactError when it differs, and when
/// the manifest records none (unless `allow_missing`); an ORT-format (.ort) file is not checked
/// (it keeps the .onnx file's manifest and digest, as in the Python runtime).
void verify_digest(const std::string& path, const Manifest& manifest, bool allow_missing = false);

}  // namespace illia
