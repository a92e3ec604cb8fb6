// The artifact contract (versions 1 and 2), read side: the fields of an illia-export manifest
// that a runtime needs. The Python module illia_export/exporters/manifest.py owns the contract;
// fields a runtime may ignore (v2: validation, likelihood, dropout, local, local_unavailable,
// digest, and each noise entry's kind / transform) are not read here beyond their kind/transform.
#pragma once

#include <cstdint>
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

/// One dim: an integer, or a symbolic name ("batch", "samples", "4*batch") when `symbol` is
/// non-empty. `batch_multiple` is k for "batch" (1) and "<k>*batch" (k), else 0.
struct Dim {
  int64_t value = -1;
  std::string symbol;
  int64_t batch_multiple = 0;
  bool is_static() const { return symbol.empty(); }
};

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
  /// One sample's noise shape for a batch of `batch` rows: the integer dims, with "batch" /
  /// "<k>*batch" dims sized k * batch (the sample axis left out).
  std::vector<int64_t> event_shape(int64_t batch) const;
  int64_t event_numel(int64_t batch) const;
  /// True when a dim is "batch" or "<k>*batch" (per-example noise).
  bool per_example() const;
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
  std::vector<TensorSpec> inputs;
  std::vector<NoiseSpec> noise;
  std::vector<TensorSpec> outputs;
};

/// Parse and check a manifest's JSON text; throws ManifestError naming the bad field.
Manifest parse_manifest(const std::string& text);

/// "[batch, 784]": a manifest shape for messages.
std::string dims_str(const std::vector<Dim>& shape);

}  // namespace illia
