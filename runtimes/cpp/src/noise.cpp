#include "illia/noise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "illia/error.h"

namespace illia {

Generator parse_generator(const std::string& name) {
  if (name == "illia-noise-v1") return Generator::V1;
  if (name == "illia-noise-v2") return Generator::V2;
  throw ManifestError("unknown noise generator '" + name +
                      "': this runtime implements illia-noise-v1, illia-noise-v2 (an artifact from a newer "
                      "illia-export? upgrade the runtime)");
}

const char* generator_name(Generator g) { return g == Generator::V2 ? "illia-noise-v2" : "illia-noise-v1"; }

uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

uint64_t stream_key(uint64_t seed, uint64_t stream) { return mix64(seed + kGolden * (stream + 1)); }

// ------------------------------------------------------------------------------------- v1
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

// ------------------------------------------------------------------------------------- v2
// The same float32 arithmetic as the Python runtime's compiled kernel
// (illia_export/runtime/_noisekernel.cpp): branch-free, so the element loop vectorizes.
namespace {

constexpr uint32_t kGolden32 = 0x9E3779B9u;
constexpr uint32_t kCentral = 322122547u;  // j >= this <=> p >= 0.075

inline uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x21F0AAADu;
  x ^= x >> 15;
  x *= 0x735A2D97u;
  x ^= x >> 15;
  return x;
}

inline float as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ln of a positive normal float (Cephes logf, ~1 ulp), branch-free.
inline float log_pos(float x) {
  const uint32_t bits = as_uint(x);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126);
  float m = as_float((bits & 0x007FFFFFu) | 0x3F000000u);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

inline float transform(uint32_t h) {
  const uint32_t j = h & 0x7FFFFFFFu;
  const float q = -(static_cast<float>(static_cast<int32_t>(0x7FFFFFFFu - j)) + 0.5f) * 2.3283064365386963e-10f;
  const float r = 0.180625f - q * q;
  const float num_c = q * (((5.9109374720e+01f * r + 1.5929113202e+02f) * r + 5.0434271938e+01f) * r +
                           3.3871327179e+00f);
  const float den_c = ((6.7187563600e+01f * r + 7.8757757664e+01f) * r + 1.7895169469e+01f) * r + 1.0f;
  const float p = (static_cast<float>(static_cast<int32_t>(j)) + 0.5f) * 2.3283064365386963e-10f;
  const float t = std::sqrt(-log_pos(p)) - 1.6f;
  const float num_t = ((1.7023821103e-01f * t + 1.3067284816e+00f) * t + 2.7568153900e+00f) * t +
                      1.4234372777e+00f;
  const float den_t = (1.2021132975e-01f * t + 7.3700164250e-01f) * t + 1.0f;
  const bool central = j >= kCentral;
  const float x = (central ? num_c : -num_t) / (central ? den_c : den_t);
  return as_float(as_uint(x) ^ (h & 0x80000000u));
}

// counters [c0, c0 + count) with a constant high word
void fill_v2_run(uint64_t key, uint64_t c0, int64_t count, float* __restrict out) {
  const uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  const uint32_t kh = k1 + kGolden32 * static_cast<uint32_t>(c0 >> 32);
  const uint32_t lo = static_cast<uint32_t>(c0);
  for (int64_t t = 0; t < count; ++t)
    out[t] = transform(lowbias32(lowbias32((lo + static_cast<uint32_t>(t)) ^ k0) ^ kh));
}

}  // namespace

uint32_t v2_hash(uint64_t key, uint64_t counter) {
  const uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  return lowbias32(lowbias32(static_cast<uint32_t>(counter) ^ k0) ^
                   (k1 + kGolden32 * static_cast<uint32_t>(counter >> 32)));
}

float v2_value(uint32_t h) { return transform(h); }

void fill_v2(uint64_t key, int64_t n, int64_t sample_start, int64_t elem_begin, int64_t elem_end, float* block) {
  // element e of the block has counter sample_start * n + e: contiguous, so one run per
  // 2^32-aligned counter window
  uint64_t c = static_cast<uint64_t>(sample_start) * static_cast<uint64_t>(n) + static_cast<uint64_t>(elem_begin);
  int64_t e = elem_begin;
  while (e < elem_end) {
    const uint64_t to_wrap = (uint64_t(1) << 32) - (c & 0xFFFFFFFFULL);
    const int64_t count = static_cast<int64_t>(std::min<uint64_t>(static_cast<uint64_t>(elem_end - e), to_wrap));
    fill_v2_run(key, c, count, block + e);
    e += count;
    c += static_cast<uint64_t>(count);
  }
}

void standard_normal_v2(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                        float* out) {
  fill_v2(stream_key(seed, stream), n, sample_start, 0, n * num_samples, out);
}

void standard_normal(Generator g, uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start,
                     int64_t num_samples, float* out) {
  if (g == Generator::V2)
    standard_normal_v2(seed, stream, n, sample_start, num_samples, out);
  else
    standard_normal(seed, stream, n, sample_start, num_samples, out);
}

}  // namespace illia
