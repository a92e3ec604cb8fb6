// The noise generators this runtime has, by the name a manifest gives (manifest.noise_generator).
// A seed reproduces only with the generator the artifact was exported for, so a Predictor
// refuses a manifest naming one it lacks. Adding a generator (say illia-noise-v2, once ported
// next to illia-noise-v1 in noise.h) is one entry in src/noise_generators.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace illia {

/// Splits [0, n) into disjoint ranges with at least `grain` per range and calls fn(begin, end)
/// on each, possibly in parallel (Backend::parallel_for).
using ParallelFor = std::function<void(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn)>;

struct NoiseGenerator {
  const char* name;
  /// Samples [sample_start, sample_start + num_samples) of stream `stream` (the noise input's
  /// position in the manifest) for `seed`, `n` standard normals each, into `out`
  /// (num_samples * n floats, row-major). Same numbers however `parallel_for` splits the work.
  void (*fill)(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples, float* out,
               const ParallelFor& parallel_for);
};

/// The generator called `name`; throws ManifestError naming the generators this runtime has.
const NoiseGenerator& noise_generator(const std::string& name);

/// Names of the generators this runtime has ("illia-noise-v1", ...).
std::vector<std::string> noise_generator_names();

}  // namespace illia
