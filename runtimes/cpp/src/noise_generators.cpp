// The one place that maps manifest.noise_generator to code (see illia/generators.h).
#include "illia/generators.h"

#include "illia/error.h"
#include "illia/noise.h"

namespace illia {

namespace {

// Element pairs below which splitting the noise over threads does not pay.
constexpr int64_t kNoiseGrain = 1 << 15;

void fill_illia_noise_v1(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                         float* out, const ParallelFor& parallel_for) {
  const uint64_t key = stream_key(seed, stream);
  const int64_t pairs = num_samples * ((n + 1) / 2);
  parallel_for(pairs, kNoiseGrain,
               [&](int64_t begin, int64_t end) { fill_normal_pairs(key, n, sample_start, begin, end, out); });
}

void fill_illia_noise_v2(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                         float* out, const ParallelFor& parallel_for) {
  const uint64_t key = stream_key(seed, stream);  // one normal per element: split over elements
  parallel_for(num_samples * n, 2 * kNoiseGrain,
               [&](int64_t begin, int64_t end) { fill_v2(key, n, sample_start, begin, end, out); });
}

// Every generator this runtime has. Add new ones here (name as the Python side writes it).
const NoiseGenerator kGenerators[] = {
    {"illia-noise-v1", &fill_illia_noise_v1},
    {"illia-noise-v2", &fill_illia_noise_v2},
};

}  // namespace

std::vector<std::string> noise_generator_names() {
  std::vector<std::string> names;
  for (const NoiseGenerator& g : kGenerators) names.emplace_back(g.name);
  return names;
}

const NoiseGenerator& noise_generator(const std::string& name) {
  for (const NoiseGenerator& g : kGenerators)
    if (name == g.name) return g;
  std::string have;
  for (const std::string& n : noise_generator_names()) have += (have.empty() ? "" : ", ") + n;
  throw ManifestError("manifest.noise_generator '" + name + "' is not supported by this illia C++ runtime (it has " +
                      have + "); the same seed would give other noise, so update the runtime");
}

}  // namespace illia
