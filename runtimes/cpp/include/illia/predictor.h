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
  /// Row ids of the batch's rows (docs/noise.md, "Row-keyed noise"): every noise input with a
  /// "batch" dim is drawn per row under the row's key, so a row's answer does not depend on the
  /// batch it comes in. Empty: the row indices 0..B-1 (the default of every illia runtime).
  /// Integer ids are their own 64-bit word (negative ids two's complement).
  std::vector<int64_t> row_ids;
  /// Accept NaN / inf in float inputs (refused by default, as in the Python runtime: they give
  /// NaN summaries that look like answers).
  bool allow_nonfinite = false;
  /// Bytes the prediction may allocate (0: what the process may use now: MemAvailable, the
  /// cgroup limit, RLIMIT_AS). The bank, the noise and outputs of a chunk are sized against it
  /// before anything is allocated (ResourceError naming what to lower).
  int64_t memory_budget = 0;
};

/// Bytes this process may still allocate: the smallest of /proc/meminfo's MemAvailable, the
/// cgroup (v2 memory.max - memory.current, or v1) limit and RLIMIT_AS; -1 when none is known.
int64_t available_memory();

struct Prediction {
  /// One summary per output, manifest.outputs order: mean and std of the raw values. For a
  /// classification artifact the first output also gets the softmax measures (probabilities,
  /// entropy, expected entropy, mutual information), as in the Python runtime.
  std::vector<OutputSummary> outputs;
};

struct LoadOptions {
  /// Check the artifact's bytes against manifest.digest (illia/digest.h) and refuse an artifact
  /// whose manifest records none. false: run it unchecked (illia-mc --no-digest-check).
  bool check_digest = true;
};

class Predictor {
 public:
  /// Load an artifact (detect_artifact): ONNX Runtime for .onnx / .ort, AOTInductor for a .pt2
  /// package, TorchScript otherwise; each needs its backend in the build. The manifest is read
  /// from the artifact or from the sidecar `<path>.manifest.json` and must name this kind of
  /// artifact and a noise generator this runtime has, and (unless options.check_digest is
  /// false) a digest that the file's bytes match. Throws ArtifactError / ManifestError.
  static Predictor load(const std::string& path, const LoadOptions& options = LoadOptions());

  /// Throws ManifestError when manifest.noise_generator is not one this runtime has.
  Predictor(std::unique_ptr<Backend> backend, Manifest manifest);
  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;
  ~Predictor();

  const Manifest& manifest() const { return manifest_; }

  /// Run S samples on `inputs` (manifest.inputs order; shapes must match the static dims).
  /// Noise dims "<name>" / "<k>*<name>" are sized from the inputs (the size of the first input
  /// axis named <name>, times k); noise with a "batch" dim is row-keyed (options.row_ids).
  /// Throws ShapeError / InputError (inputs), ResourceError (memory), ArtifactError (graph).
  Prediction predict(const std::vector<Array>& inputs, const PredictOptions& options);
  Prediction predict(const Array& input, const PredictOptions& options);

 private:
  struct Bank;
  std::unique_ptr<Backend> backend_;
  Manifest manifest_;
  std::unique_ptr<Bank> bank_;
  const NoiseGenerator* generator_;

  /// Checks the inputs against the manifest and returns the sizes of their symbolic dims
  /// ("batch" always: the inputs' batch dim, else the first input's first dim).
  DimSizes check_inputs(const std::vector<Array>& inputs, bool allow_nonfinite) const;
  const std::vector<std::vector<float>>& bank(uint64_t seed, int64_t num_samples,
                                              const std::vector<std::vector<int64_t>>& shapes,
                                              const std::vector<uint64_t>& words);
  /// Samples [sample_start, sample_start + num_samples) of noise input `stream` with per-sample
  /// shape `shape` into `out`: row-keyed (one key per word) when the input has a "batch" dim
  /// and stream-wide otherwise; split over the backend's thread pool (same numbers).
  void generate_noise(uint64_t seed, uint64_t stream, const std::vector<int64_t>& shape,
                      const std::vector<uint64_t>& words, int64_t sample_start, int64_t num_samples, float* out);
};

}  // namespace illia
