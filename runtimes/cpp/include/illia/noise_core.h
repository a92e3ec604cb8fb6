// The one compiled kernel of the illia-export noise generators, shared by the Python extension
// (illia_export/runtime/_noisekernel.cpp, built by setup.py) and the C++ runtime
// (runtimes/cpp/src/noise.cpp, noise_generators.cpp). docs/noise.md is normative; the numpy
// references are `illia_export.runtime.noise.standard_normal_v2` / `standard_normal`, and both
// users are held to the same test vectors (tests/cpp/test_noise_tool.py,
// tests/mobile/test_noise_ports.py, tests/runtime noise tests).
//
// Header-only and dependency-free (C++17, no Python, no LibTorch) so that both builds compile
// the same text with the same flags: -O3 -fno-math-errno -fno-trapping-math -ffp-contract=off
// (no FMA: every element is bit-identical between the AVX-512, AVX2 and scalar clones and
// across CPUs; without the first two the log/sqrt/select loops do not vectorize).
//
// illia-noise-v2: one standard normal per element from 32-bit integer arithmetic and a float32
// inverse normal CDF, all plain arithmetic so that the compiler vectorizes the element loop.
//
//   key = stream_key(seed, stream)            (64-bit, as in v1);  k0 = key low 32, k1 = key high 32
//   c   = s * n + i                           (element i of sample s, 64-bit)
//   h   = lowbias32(lo32(c) ^ k0);  h = lowbias32(h ^ (k1 + 0x9E3779B9 * hi32(c)))   (mod 2^32)
//   j   = h & 0x7FFFFFFF,  p = (j + 0.5) / 2^32 in (0, 1/2)
//   x   = PPND7(p) <= 0 (Wichura's AS241, 7 digits);  value = x if h >> 31 == 0 else -x
//
// evaluated in float32 (Cephes-style log): within ~3.3e-7 relative of the float64 reference.
//
// illia-noise-v1: SplitMix64 over pair counters and a float64 Box-Muller step, with log, sin
// and cos as float64 polynomials (no libm calls) so that the pair loop vectorizes too.
//
// Row keys (docs/noise.md, "Row-keyed noise"): row_key(stream_key, word) is the key of one row's
// own stream; a row's block is then an ordinary fill under that key.
//
// The element loops are cloned for AVX-512, AVX2 and the baseline (GCC on x86-64, chosen at
// load time); they have internal linkage, so each translation unit that includes this header
// carries its own copy (define ILLIA_NO_CLONES to build without clones).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace illia {
namespace core {

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(_M_X64)) && \
    !defined(ILLIA_NO_CLONES)
#define ILLIA_NOISE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ILLIA_NOISE_CLONES
#endif

constexpr uint32_t kGolden32 = 0x9E3779B9u;
constexpr uint32_t kCentral = 322122547u;  // j >= this <=> p >= 0.075 (AS241's |p - 1/2| <= 0.425)

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

// Natural log of a positive normal float (Cephes logf: ~1 ulp), branch-free.
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

// The v2 normal of a 32-bit hash (float32 evaluation of the spec's PPND7 transform).
inline float v2_transform(uint32_t h) {
  const uint32_t j = h & 0x7FFFFFFFu;
  // central region: q = p - 1/2 = -((2^31 - 1 - j) + 0.5) / 2^32 (integer part exact)
  const float q = -(static_cast<float>(static_cast<int32_t>(0x7FFFFFFFu - j)) + 0.5f) * 2.3283064365386963e-10f;
  const float r = 0.180625f - q * q;
  const float num_c = q * (((5.9109374720e+01f * r + 1.5929113202e+02f) * r + 5.0434271938e+01f) * r +
                           3.3871327179e+00f);
  const float den_c = ((6.7187563600e+01f * r + 7.8757757664e+01f) * r + 1.7895169469e+01f) * r + 1.0f;
  // tail: p = (j + 0.5) / 2^32 < 0.075, r = sqrt(-ln p) - 1.6 (p >= 2^-33 keeps r <= 3.12)
  const float p = (static_cast<float>(static_cast<int32_t>(j)) + 0.5f) * 2.3283064365386963e-10f;
  const float t = std::sqrt(-log_pos(p)) - 1.6f;
  const float num_t = ((1.7023821103e-01f * t + 1.3067284816e+00f) * t + 2.7568153900e+00f) * t +
                      1.4234372777e+00f;
  const float den_t = (1.2021132975e-01f * t + 7.3700164250e-01f) * t + 1.0f;
  // both branches computed, then selected (no jump: the loop vectorizes); one division
  const bool central = j >= kCentral;
  const float x = (central ? num_c : -num_t) / (central ? den_c : den_t);
  return as_float(as_uint(x) ^ (h & 0x80000000u));  // flip the sign when the top bit is set
}

// Elements [c0, c0 + count) of a v2 stream; the caller keeps hi32(c) constant over the range.
ILLIA_NOISE_CLONES
static void v2_plain(uint64_t c0, int64_t count, uint32_t k0, uint32_t k1, float* __restrict out) {
  const uint32_t kh = k1 + kGolden32 * static_cast<uint32_t>(c0 >> 32);
  const uint32_t lo = static_cast<uint32_t>(c0);
  for (int64_t t = 0; t < count; ++t) {
    const uint32_t h = lowbias32(lowbias32((lo + static_cast<uint32_t>(t)) ^ k0) ^ kh);
    out[t] = v2_transform(h);
  }
}

ILLIA_NOISE_CLONES
static void v2_affine(uint64_t c0, int64_t count, uint32_t k0, uint32_t k1, float* __restrict out,
               const float* __restrict mu, const float* __restrict sigma) {
  const uint32_t kh = k1 + kGolden32 * static_cast<uint32_t>(c0 >> 32);
  const uint32_t lo = static_cast<uint32_t>(c0);
  for (int64_t t = 0; t < count; ++t) {
    const uint32_t h = lowbias32(lowbias32((lo + static_cast<uint32_t>(t)) ^ k0) ^ kh);
    out[t] = mu[t] + sigma[t] * v2_transform(h);
  }
}

// ------------------------------------------------------------------------------ illia-noise-v1
// The spec's float64 Box-Muller, with log/sin/cos as plain float64 polynomials (no libm calls)
// so that the pair loop vectorizes: ln via 2 atanh((m-1)/(m+1)) (series to s^15, ~3e-14
// relative), and the angle reduced exactly with the integer bits of u2 (quadrant = top two of
// the 24 bits) so that sin/cos are Taylor series on [0, pi/2) (~5e-14). Agrees with the numpy
// reference to float32 rounding (~1e-7).
constexpr uint64_t kGolden64 = 0x9E3779B97F4A7C15ULL;

inline uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

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

// Full pairs [p0, p1) of one sample row whose pair 0 has counter c_row; row[2p], row[2p+1].
ILLIA_NOISE_CLONES
static void v1_pairs(uint64_t key, uint64_t c_row, int64_t p0, int64_t p1, float* __restrict row) {
  for (int64_t p = p0; p < p1; ++p) {
    float a, b;
    v1_pair(mix64(key + kGolden64 * (c_row + static_cast<uint64_t>(p) + 1)), a, b);
    row[2 * p] = a;
    row[2 * p + 1] = b;
  }
}

ILLIA_NOISE_CLONES
static void v1_pairs_affine(uint64_t key, uint64_t c_row, int64_t p0, int64_t p1, float* __restrict row,
                     const float* __restrict mu, const float* __restrict sigma) {
  for (int64_t p = p0; p < p1; ++p) {
    float a, b;
    v1_pair(mix64(key + kGolden64 * (c_row + static_cast<uint64_t>(p) + 1)), a, b);
    row[2 * p] = mu[2 * p] + sigma[2 * p] * a;
    row[2 * p + 1] = mu[2 * p + 1] + sigma[2 * p + 1] * b;
  }
}

// Elements [i0, i1) of one v1 sample row (n elements, first pair counter c_row).
inline void v1_row(uint64_t key, uint64_t c_row, int64_t n, int64_t i0, int64_t i1, float* row, const float* mu,
            const float* sigma) {
  auto one = [&](int64_t i) {  // a single element of a pair cut by the range or by odd n
    float a, b;
    v1_pair(mix64(key + kGolden64 * (c_row + static_cast<uint64_t>(i / 2) + 1)), a, b);
    const float v = (i % 2 == 0) ? a : b;
    row[i] = mu ? mu[i] + sigma[i] * v : v;
  };
  int64_t i = i0;
  if (i < i1 && i % 2 == 1) one(i++);
  const int64_t full_end = i + ((i1 - i) / 2) * 2;  // pairs fully inside [i, i1)
  if (full_end > i) {
    if (mu)
      v1_pairs_affine(key, c_row, i / 2, full_end / 2, row, mu, sigma);
    else
      v1_pairs(key, c_row, i / 2, full_end / 2, row);
  }
  if (full_end < i1) one(full_end);
  (void)n;
}

/// One fill: samples [sample_start, sample_start + num_samples) of a stream, n elements each.
struct Job {
  int version;           // 1: illia-noise-v1, 2: illia-noise-v2
  uint64_t key;
  int64_t n;             // elements per sample
  int64_t sample_start;  // first sample
  float* out;            // [num_samples, n]
  const float* mu;       // [n] or null
  const float* sigma;    // [n] or null
};

// Fill flat elements [begin, end) of the job's output (element e = sample e / n, index e % n).
// Any split of [0, num_samples * n) into ranges gives the same numbers (counter-based), so
// callers may run disjoint ranges on threads.
inline void run_range(const Job& job, int64_t begin, int64_t end) {
  const uint32_t k0 = static_cast<uint32_t>(job.key), k1 = static_cast<uint32_t>(job.key >> 32);
  int64_t e = begin;
  while (e < end) {
    const int64_t s = e / job.n;
    const int64_t i = e - s * job.n;
    const int64_t row_end = std::min<int64_t>(end - e, job.n - i);  // elements left in this row
    if (job.version == 1) {
      const uint64_t m = static_cast<uint64_t>((job.n + 1) / 2);
      v1_row(job.key, static_cast<uint64_t>(job.sample_start + s) * m, job.n, i, i + row_end,
             job.out + s * job.n, job.mu, job.sigma);
      e += row_end;
      continue;
    }
    const uint64_t c = static_cast<uint64_t>(job.sample_start + s) * static_cast<uint64_t>(job.n) +
                       static_cast<uint64_t>(i);
    // keep hi32(counter) constant within one kernel call
    const uint64_t to_wrap = (uint64_t(1) << 32) - (c & 0xFFFFFFFFULL);
    const int64_t count = static_cast<int64_t>(std::min<uint64_t>(static_cast<uint64_t>(row_end), to_wrap));
    if (job.mu) {
      v2_affine(c, count, k0, k1, job.out + e, job.mu + i, job.sigma + i);
    } else {
      v2_plain(c, count, k0, k1, job.out + e);
    }
    e += count;
  }
}


/// The key of noise stream `stream` (its position in the manifest) for `seed`.
inline uint64_t stream_key(uint64_t seed, uint64_t stream) { return mix64(seed + kGolden64 * (stream + 1)); }

/// The key of one row's noise in a stream: mix64(stream_key + GOLDEN * (word + 1)), `word` the
/// row id's 64-bit word (an integer id is its own word, two's complement).
inline uint64_t row_key(uint64_t stream_key_value, uint64_t word) {
  return mix64(stream_key_value + kGolden64 * (word + 1));
}

}  // namespace core
}  // namespace illia
