// The artifact contract (versions 1 and 2), read side: the fields of an illia-export manifest
// that a runtime needs. The Python module illia_export/exporters/manifest.py owns the contract;
// fields a runtime may ignore (v2: validation, likelihood, dropout, local, local_unavailable,
// digest, and each noise entry's kind / transform) are not read here beyond their kind/transform.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace illia {

/// The contract version illia-export writes now; parse_manifest reads 1 .. kContractVersion.
constexpr int kContractVersion = 2;
constexpr int kOldestContractVersion = 1;
/// The noise generator of manifests that name none (all of contract version 1).
constexpr const char* kDefaultNoiseGenerator = "illia-noise-v1";
/// Name of the manifest inside a TorchScript archive (extra file).
constexpr const char* kEmbeddedName = "illia_manifest.json";
/// Key of the manifest in ONNX metadata_props and in an AOTInductor package's metadata.
constexpr const char* kOnnxMetadataKey = "illia_export.manifest";
constexpr const char* kAotiMetadataKey = "illia_export.manifest";

/// The symbolic dim name of the batch (row-keyed per-example noise follows it).
constexpr const char* kBatchDim = "batch";
/// The symbolic dim name of the sample axis (axis 0 of vectorized noise only).
constexpr const char* kSampleDim = "samples";

/// One dim: an integer, or a symbolic one when `symbol` is non-empty: "samples", a name
/// ("batch", "seq_len", ...) or "<k>*<name>" (docs/noise.md, "Noise dims"). For a name, `name`
/// is the bare name and `multiple` its k (1 for a plain name).
struct Dim {
  int64_t value = -1;
  std::string symbol;
  std::string name;      ///< "seq_len" for "seq_len" and "4*seq_len"; "" for integers
  int64_t multiple = 0;  ///< k of "<k>*<name>", 1 for "<name>", 0 for integers
  bool is_static() const { return symbol.empty(); }
  /// "batch" itself (multiple 1): the dim a row-keyed noise input is drawn along.
  bool is_batch() const { return name == kBatchDim && multiple == 1; }
};

/// Sizes of the symbolic dims of a call, from its input arrays ("batch" -> 8, "seq_len" -> 12).
using DimSizes = std::map<std::string, int64_t>;

struct TensorSpec {
  std::string name;
  std::vector<Dim> shape;
  std::string dtype = "float32";
};

struct NoiseSpec {
  std::string name;
  std::string parameter;         ///< dotted path of the distribution (or draw site) in the source model
  std::vector<Dim> shape;        ///< with a leading "samples" dim when the graph is vectorized
  std::string kind = "weight";   ///< v2: weight | dropout | flipout_sign | draw (informative)
  std::string transform = "affine";  ///< v2: what the graph does with the normals (informative)
  /// One sample's noise shape for a call whose inputs give the symbolic dims `sizes`: the
  /// integer dims, with "<k>*<name>" sized k * sizes[name] (the sample axis left out).
  /// Throws ShapeError when a product overflows.
  std::vector<int64_t> event_shape(const DimSizes& sizes) const;
  /// The position of the "batch" dim in event_shape (-1 when none): the axis a row-keyed draw
  /// follows (docs/noise.md, "Row-keyed noise").
  int batch_axis() const;
  /// True when a dim folds the batch with a factor ("<k>*batch", k > 1): drawn stream-wide
  /// (its rows cannot be keyed).
  bool folds_batch() const;
};

struct Manifest {
  int contract = kContractVersion;
  std::string format;  ///< onnx | torchscript | savedmodel | tflite | pt2 | aoti
  std::string source;
  std::string task = "raw";  ///< classification | regression | raw
  bool vectorized = false;   ///< sample_axis == 0 (false: sample_axis is null)
  /// The generator the noise must come from for a seed to reproduce (v2; v1: illia-noise-v1).
  /// Checked against the runtime's generators by Predictor (src/noise_generators.cpp).
  std::string noise_generator = kDefaultNoiseGenerator;
  /// "sha256:<hex>" of the graph bytes (v2, optional): checked by Predictor::load
  /// (illia/digest.h); "" when the manifest records none.
  std::string digest;
  /// 2: `digest` covers the graph and the canonical JSON of the manifest's sampling fields
  /// (`canonical`); 1 or 0 (absent): an older digest of the graph bytes only.
  int digest_scheme = 0;
  /// The canonical JSON (docs/formats.md, "Integrity digest") of every manifest field except
  /// digest, validation and extra, as the scheme-2 digest hashes it.
  std::string canonical;
  std::vector<TensorSpec> inputs;
  std::vector<NoiseSpec> noise;
  std::vector<TensorSpec> outputs;
};

/// Parse and check a manifest's JSON text; throws ManifestError naming the bad field (a noise
/// dim naming a symbolic dim that no input has is one).
Manifest parse_manifest(const std::string& text);

/// "[batch, 784]": a manifest shape for messages.
std::string dims_str(const std::vector<Dim>& shape);

}  // namespace illia
