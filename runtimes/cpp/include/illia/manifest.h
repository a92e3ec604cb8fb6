// The artifact contract (version 1), read side: the fields of an illia-export manifest that
// a runtime needs. The Python module illia_export/exporters/manifest.py owns the contract.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace illia {

constexpr int kContractVersion = 1;
/// Name of the manifest inside a TorchScript archive (extra file).
constexpr const char* kEmbeddedName = "illia_manifest.json";
/// Key of the manifest in ONNX metadata_props.
constexpr const char* kOnnxMetadataKey = "illia_export.manifest";

/// One dim: an integer, or a symbolic name ("batch", "samples") when `symbol` is non-empty.
struct Dim {
  int64_t value = -1;
  std::string symbol;
  bool is_static() const { return symbol.empty(); }
};

struct TensorSpec {
  std::string name;
  std::vector<Dim> shape;
  std::string dtype = "float32";
};

struct NoiseSpec {
  std::string name;
  std::string parameter;         ///< dotted path of the distribution in the source model
  std::vector<Dim> shape;        ///< with a leading "samples" dim when the graph is vectorized
  std::vector<int64_t> event_shape() const;  ///< the integer dims (one sample's noise)
  int64_t event_numel() const;
};

struct Manifest {
  int contract = kContractVersion;
  std::string format;  ///< torchscript | onnx | savedmodel | tflite
  std::string source;
  std::string task = "raw";  ///< classification | regression | raw
  bool vectorized = false;   ///< sample_axis == 0 (false: sample_axis is null)
  std::vector<TensorSpec> inputs;
  std::vector<NoiseSpec> noise;
  std::vector<TensorSpec> outputs;
  /// The noise generator the artifact was exported for (absent in old manifests: v1).
  std::string noise_generator = "illia-noise-v1";
};

/// Parse and check a manifest's JSON text; throws ManifestError naming the bad field.
Manifest parse_manifest(const std::string& text);

/// "[batch, 784]": a manifest shape for messages.
std::string dims_str(const std::vector<Dim>& shape);

}  // namespace illia
