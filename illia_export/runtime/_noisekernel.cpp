// Compiled kernel of the illia-export noise generator illia-noise-v2 (Python extension
// `illia_export.runtime._noisekernel`, built by setup.py with the package).
//
// illia-noise-v2 (docs/noise.md is normative; the numpy reference is
// `illia_export.runtime.noise.standard_normal_v2`): one standard normal per element from
// 32-bit integer arithmetic and a float32 inverse normal CDF, all plain arithmetic so that the
// compiler vectorizes the element loop (AVX-512 / AVX2 clones chosen at load time).
//
//   key = stream_key(seed, stream)            (64-bit, as in v1);  k0 = key low 32, k1 = key high 32
//   c   = s * n + i                           (element i of sample s, 64-bit)
//   h   = lowbias32(lo32(c) ^ k0);  h = lowbias32(h ^ (k1 + 0x9E3779B9 * hi32(c)))   (mod 2^32)
//   j   = h & 0x7FFFFFFF,  p = (j + 0.5) / 2^32 in (0, 1/2)
//   x   = PPND7(p) <= 0 (Wichura's AS241, 7 digits);  value = x if h >> 31 == 0 else -x
//
// The kernel evaluates everything in float32 (Cephes-style log); it agrees with the float64
// reference to ~3e-7 absolute. Threads split the element range; the value of an element never
// depends on the split (counter-based), which the tests check.
//
// Optionally the kernel writes `mu[i] + sigma[i] * value` instead of `value`: the sampled weight
// itself, so that a weight-fed graph reads memory once.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(_M_X64)) && \
    !defined(ILLIA_NO_CLONES)
#define ILLIA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ILLIA_CLONES
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
ILLIA_CLONES
void v2_plain(uint64_t c0, int64_t count, uint32_t k0, uint32_t k1, float* __restrict out) {
  const uint32_t kh = k1 + kGolden32 * static_cast<uint32_t>(c0 >> 32);
  const uint32_t lo = static_cast<uint32_t>(c0);
  for (int64_t t = 0; t < count; ++t) {
    const uint32_t h = lowbias32(lowbias32((lo + static_cast<uint32_t>(t)) ^ k0) ^ kh);
    out[t] = v2_transform(h);
  }
}

ILLIA_CLONES
void v2_affine(uint64_t c0, int64_t count, uint32_t k0, uint32_t k1, float* __restrict out,
               const float* __restrict mu, const float* __restrict sigma) {
  const uint32_t kh = k1 + kGolden32 * static_cast<uint32_t>(c0 >> 32);
  const uint32_t lo = static_cast<uint32_t>(c0);
  for (int64_t t = 0; t < count; ++t) {
    const uint32_t h = lowbias32(lowbias32((lo + static_cast<uint32_t>(t)) ^ k0) ^ kh);
    out[t] = mu[t] + sigma[t] * v2_transform(h);
  }
}

struct Job {
  uint64_t key;
  int64_t n;             // elements per sample
  int64_t sample_start;  // first sample
  float* out;            // [num_samples, n]
  const float* mu;       // [n] or null
  const float* sigma;    // [n] or null
};

// Fill flat elements [begin, end) of the job's output (element e = sample e / n, index e % n).
void run_range(const Job& job, int64_t begin, int64_t end) {
  const uint32_t k0 = static_cast<uint32_t>(job.key), k1 = static_cast<uint32_t>(job.key >> 32);
  int64_t e = begin;
  while (e < end) {
    const int64_t s = e / job.n;
    const int64_t i = e - s * job.n;
    const int64_t row_end = std::min<int64_t>(end - e, job.n - i);  // elements left in this row
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

// Smallest share of elements worth a thread of its own.
constexpr int64_t kMinShare = 1 << 16;

void run_job(const Job& job, int64_t total, int threads) {
  int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, total / kMinShare));
  if (workers <= 1) {
    run_range(job, 0, total);
    return;
  }
  // contiguous, 64-element aligned shares (each element's value does not depend on the split)
  const int64_t share = ((total + workers - 1) / workers + 63) & ~int64_t(63);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int64_t w = 1; w < workers; ++w) {
    const int64_t b = w * share, e = std::min(total, (w + 1) * share);
    if (b < e) pool.emplace_back(run_range, std::cref(job), b, e);
  }
  run_range(job, 0, std::min(total, share));
  for (auto& t : pool) t.join();
}

// fill_v2(key, n, sample_start, num_samples, out_addr, mu_addr, sigma_addr, threads)
PyObject* py_fill(PyObject*, PyObject* args) {
  int threads;
  unsigned long long key, out_addr, mu_addr, sigma_addr;
  long long n, sample_start, num_samples;
  if (!PyArg_ParseTuple(args, "KLLLKKKi", &key, &n, &sample_start, &num_samples, &out_addr, &mu_addr,
                        &sigma_addr, &threads))
    return nullptr;
  if (n < 0 || sample_start < 0 || num_samples < 0 || out_addr == 0 || ((mu_addr == 0) != (sigma_addr == 0))) {
    PyErr_SetString(PyExc_ValueError, "invalid sizes or buffer addresses");
    return nullptr;
  }
  Job job{static_cast<uint64_t>(key),
          static_cast<int64_t>(n),
          static_cast<int64_t>(sample_start),
          reinterpret_cast<float*>(static_cast<uintptr_t>(out_addr)),
          reinterpret_cast<const float*>(static_cast<uintptr_t>(mu_addr)),
          reinterpret_cast<const float*>(static_cast<uintptr_t>(sigma_addr))};
  const int64_t total = static_cast<int64_t>(n) * static_cast<int64_t>(num_samples);
  if (total > 0) {
    Py_BEGIN_ALLOW_THREADS run_job(job, total, std::max(1, threads));
    Py_END_ALLOW_THREADS
  }
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"fill_v2", py_fill, METH_VARARGS,
     "fill_v2(key, n, sample_start, num_samples, out_addr, mu_addr, sigma_addr, threads): write "
     "samples [sample_start, sample_start + num_samples) of one illia-noise-v2 stream (n elements each, float32) at "
     "out_addr, or mu + sigma * noise when mu_addr/sigma_addr are non-zero."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_noisekernel",
                       "Compiled illia-noise-v2 generator (see illia_export.runtime.noise).", -1, kMethods};

}  // namespace

PyMODINIT_FUNC PyInit__noisekernel(void) { return PyModule_Create(&kModule); }
