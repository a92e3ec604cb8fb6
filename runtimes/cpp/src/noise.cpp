#include "illia/noise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "illia/error.h"

// The element loops below are written to vectorize (no calls, selects instead of jumps) when
// this file is compiled with -O3 -fno-trapping-math -fno-math-errno (with GCC on x86-64 the
// loops are also cloned for AVX-512 and AVX2, chosen at load time). No FMA in any clone, so
// every path gives the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ILLIA_VECTOR_LOOP __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ILLIA_VECTOR_LOOP
#endif

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
namespace {

// The spec's float64 Box-Muller with log/sin/cos as plain float64 polynomials (as in the Python
// runtime's kernel, illia_export/runtime/_noisekernel.cpp): the pair loop vectorizes, and the
// values match the numpy reference to float32 rounding.
inline double as_double(uint64_t u) {
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}

inline uint64_t as_u64(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

// ln of a positive normal double
inline double log_pos64(double x) {
  const uint64_t bits = as_u64(x);
  double e = static_cast<double>(static_cast<int32_t>(bits >> 52) - 1023);
  double m = as_double((bits & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL);  // [1, 2)
  const bool big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  e = big ? e + 1.0 : e;
  const double s = (m - 1.0) / (m + 1.0);  // |s| <= 0.1716
  const double s2 = s * s;
  double p = 1.0 / 15.0;
  p = p * s2 + 1.0 / 13.0;
  p = p * s2 + 1.0 / 11.0;
  p = p * s2 + 1.0 / 9.0;
  p = p * s2 + 1.0 / 7.0;
  p = p * s2 + 1.0 / 5.0;
  p = p * s2 + 1.0 / 3.0;
  p = p * s2 + 1.0;
  return 2.0 * s * p + e * 0.6931471805599453;
}

// (r cos t, r sin t) of one 64-bit value z, as in the spec
inline void v1_pair(uint64_t z, float& c_out, float& s_out) {
  const double u1 = (static_cast<double>(static_cast<int32_t>(z >> 40)) + 0.5) * (1.0 / 16777216.0);
  const double r = std::sqrt(-2.0 * log_pos64(u1));
  const uint32_t w = static_cast<uint32_t>(z >> 16) & 0xFFFFFFu;
  const uint32_t quadrant = w >> 22;
  // t = 2 pi (w + 0.5) / 2^24 = (pi / 2) (quadrant + a'), a' = ((w mod 2^22) + 0.5) / 2^22
  const double a = (static_cast<double>(static_cast<int32_t>(w & 0x3FFFFFu)) + 0.5) *
                   (1.5707963267948966 / 4194304.0);
  const double a2 = a * a;
  // sin a = a * sum_k (-1)^k a^2k / (2k+1)!,  cos a = sum_k (-1)^k a^2k / (2k)!  (Horner)
  double sn = 1.0 / 355687428096000.0;  // 1/17!
  sn = sn * a2 - 1.0 / 1307674368000.0;  // 1/15!
  sn = sn * a2 + 1.0 / 6227020800.0;     // 1/13!
  sn = sn * a2 - 1.0 / 39916800.0;       // 1/11!
  sn = sn * a2 + 1.0 / 362880.0;         // 1/9!
  sn = sn * a2 - 1.0 / 5040.0;           // 1/7!
  sn = sn * a2 + 1.0 / 120.0;            // 1/5!
  sn = sn * a2 - 1.0 / 6.0;              // 1/3!
  sn = (sn * a2 + 1.0) * a;
  double cs = -1.0 / 6402373705728000.0;  // 1/18!
  cs = cs * a2 + 1.0 / 20922789888000.0;  // 1/16!
  cs = cs * a2 - 1.0 / 87178291200.0;     // 1/14!
  cs = cs * a2 + 1.0 / 479001600.0;       // 1/12!
  cs = cs * a2 - 1.0 / 3628800.0;         // 1/10!
  cs = cs * a2 + 1.0 / 40320.0;           // 1/8!
  cs = cs * a2 - 1.0 / 720.0;             // 1/6!
  cs = cs * a2 + 1.0 / 24.0;              // 1/4!
  cs = cs * a2 - 0.5;                     // 1/2!
  cs = cs * a2 + 1.0;
  const double c = quadrant == 0 ? cs : quadrant == 1 ? -sn : quadrant == 2 ? -cs : sn;
  const double sv = quadrant == 0 ? sn : quadrant == 1 ? cs : quadrant == 2 ? -sn : -cs;
  c_out = static_cast<float>(r * c);
  s_out = static_cast<float>(r * sv);
}

// full pairs [p0, p1) of one row (pair 0 has counter c_row)
ILLIA_VECTOR_LOOP
void v1_full_pairs(uint64_t key, uint64_t c_row, int64_t p0, int64_t p1, float* __restrict row) {
  for (int64_t p = p0; p < p1; ++p) {
    float a, b;
    v1_pair(mix64(key + kGolden * (c_row + static_cast<uint64_t>(p) + 1)), a, b);
    row[2 * p] = a;
    row[2 * p + 1] = b;
  }
}

}  // namespace

void fill_normal_pairs(uint64_t key, int64_t n, int64_t sample_start, int64_t pair_begin, int64_t pair_end,
                       float* block) {
  const int64_t m = (n + 1) / 2;
  int64_t q = pair_begin;
  while (q < pair_end) {
    const int64_t s = q / m;
    const int64_t p0 = q - s * m;
    const int64_t p1 = std::min<int64_t>(m, p0 + (pair_end - q));  // pairs of this row in range
    const uint64_t c_row = static_cast<uint64_t>(sample_start + s) * static_cast<uint64_t>(m);
    float* row = block + s * n;
    const int64_t full = (n % 2 == 1 && p1 == m) ? p1 - 1 : p1;  // the last pair of an odd row is half
    if (full > p0) v1_full_pairs(key, c_row, p0, full, row);
    if (full < p1) {
      float a, b;
      v1_pair(mix64(key + kGolden * (c_row + static_cast<uint64_t>(full) + 1)), a, b);
      row[2 * full] = a;
    }
    q += p1 - p0;
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
ILLIA_VECTOR_LOOP
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
