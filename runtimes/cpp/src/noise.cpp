#include "illia/noise.h"

#include <cmath>

namespace illia {

uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

uint64_t stream_key(uint64_t seed, uint64_t stream) { return mix64(seed + kGolden * (stream + 1)); }

void fill_normal_pairs(uint64_t key, int64_t n, int64_t sample_start, int64_t pair_begin, int64_t pair_end,
                       float* block) {
  const int64_t m = (n + 1) / 2;
  const double two_pi = 2.0 * M_PI;
  const double inv24 = 1.0 / 16777216.0;
  for (int64_t q = pair_begin; q < pair_end; ++q) {
    const int64_t s = q / m;
    const int64_t p = q - s * m;
    const uint64_t c = static_cast<uint64_t>(sample_start + s) * static_cast<uint64_t>(m) + static_cast<uint64_t>(p);
    const uint64_t z = mix64(key + kGolden * (c + 1));
    const double u1 = (static_cast<double>(z >> 40) + 0.5) * inv24;
    const double u2 = (static_cast<double>((z >> 16) & 0xFFFFFFULL) + 0.5) * inv24;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double t = two_pi * u2;
    float* row = block + s * n;
    row[2 * p] = static_cast<float>(r * std::cos(t));
    if (2 * p + 1 < n) row[2 * p + 1] = static_cast<float>(r * std::sin(t));
  }
}

void standard_normal(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                     float* out) {
  const int64_t m = (n + 1) / 2;
  fill_normal_pairs(stream_key(seed, stream), n, sample_start, 0, num_samples * m, out);
}

}  // namespace illia
