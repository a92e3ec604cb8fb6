// Monte Carlo prediction from an illia-export artifact: seeded illia-noise-v1 noise, S samples
// (vectorized chunks or one call per sample), and the uncertainty summaries.
//
//   illia::Predictor p = illia::Predictor::load("model.pt");
//   illia::Prediction r = p.predict(x, {/*num_samples=*/32, /*seed=*/0});
//   r.outputs[0].mean, r.outputs[0].std, r.outputs[0].mutual_information ...
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "illia/array.h"
#include "illia/backend.h"
#include "illia/generators.h"
#include "illia/manifest.h"
#include "illia/summary.h"

namespace illia {

/// fresh: noise samples [0, S) of each stream for the call's seed, generated per chunk.
/// bank: the same S draws, generated once and cached by the predictor (for that seed and S),
/// then reused by every call: cheaper, same numbers.
enum class Strategy { Fresh, Bank };

struct PredictOptions {
  int64_t num_samples = 32;
  uint64_t seed = 0;
  Strategy strategy = Strategy::Fresh;
  /// Samples whose noise is drawn at once (0: as many as fit in 512 MiB of noise, at most S):
  /// a vectorized artifact takes them in one graph call; a per-call artifact still runs one
  /// call per sample. Results do not depend on it; it bounds memory.
  int64_t chunk_size = 0;
};

struct Prediction {
  /// One summary per output, manifest.outputs order: mean and std of the raw values. For a
  /// classification artifact the first output also gets the softmax measures (probabilities,
  /// entropy, expected entropy, mutual information), as in the Python runtime.
  std::vector<OutputSummary> outputs;
};

class Predictor {
 public:
  /// Load an artifact (detect_artifact): ONNX Runtime for .onnx / .ort, AOTInductor for a .pt2
  /// package, TorchScript otherwise; each needs its backend in the build. The manifest is read
  /// from the artifact or from the sidecar `<path>.manifest.json` and must name this kind of
  /// artifact and a noise generator this runtime has. Throws ArtifactError / ManifestError.
  static Predictor load(const std::string& path);

  /// Throws ManifestError when manifest.noise_generator is not one this runtime has.
  Predictor(std::unique_ptr<Backend> backend, Manifest manifest);
  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;
  ~Predictor();

  const Manifest& manifest() const { return manifest_; }

  /// Run S samples on `inputs` (manifest.inputs order; shapes must match the static dims).
  /// Noise dims "batch" / "<k>*batch" are sized from the inputs' batch (the "batch" dim of the
  /// inputs, else the first input's first dim), as in the Python runtime.
  Prediction predict(const std::vector<Array>& inputs, const PredictOptions& options);
  Prediction predict(const Array& input, const PredictOptions& options);

 private:
  struct Bank;
  std::unique_ptr<Backend> backend_;
  Manifest manifest_;
  std::unique_ptr<Bank> bank_;
  const NoiseGenerator* generator_;

  /// Checks the inputs against the manifest and returns the batch size.
  int64_t check_inputs(const std::vector<Array>& inputs) const;
  const std::vector<std::vector<float>>& bank(uint64_t seed, int64_t num_samples, const std::vector<int64_t>& numels);
  /// The manifest's noise generator, split over the backend's thread pool (same numbers).
  void generate_noise(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                      float* out);
};

}  // namespace illia
