// The seeded, counter-based standard normals every illia runtime shares (docs/noise.md is
// normative; the numpy references are illia_export/runtime/noise.py). The arithmetic lives in
// one header, illia/noise_core.h, which the Python runtime's compiled kernel includes too; this
// is the library's API around it (threads through a ParallelFor, row keys, generator names).
//
// illia-noise-v2 (default of new exports): one normal per element, 32-bit arithmetic.
//   key = stream_key(seed, stream);  k0 = low 32 bits of key, k1 = high 32 bits
//   element i of sample s (n elements per sample): counter c = s * n + i (64-bit)
//   h = lowbias32(lo32(c) ^ k0);  h = lowbias32(h ^ (k1 + 0x9E3779B9 * hi32(c)))   (mod 2^32)
//   j = h & 0x7FFFFFFF, p = (j + 0.5) / 2^32; x = PPND7(p) <= 0 (Wichura's AS241);
//   value = x, negated when h >> 31 is 1.
//
// illia-noise-v1 (artifacts exported before v2):
//   key_k = mix64(seed + GOLDEN * (k + 1))            k = position of the noise in the manifest
//   a noise with n elements per sample uses m = ceil(n / 2) counters per sample;
//   element pair p of sample s uses c = s * m + p and z = mix64(key_k + GOLDEN * (c + 1));
//   u1 = ((z >> 40) + 0.5) / 2^24,  u2 = (((z >> 16) & 0xFFFFFF) + 0.5) / 2^24;
//   r = sqrt(-2 ln u1), t = 2 pi u2 (double); element 2p = r cos t, element 2p+1 = r sin t
//   (dropped for the last pair when n is odd), rounded to float.
// mix64 is the SplitMix64 finalizer.
//
// Row-keyed noise (per-example draws): row b of stream k is the generator's ordinary stream
// under row_key(stream_key(seed, k), word_b), word_b the row's id (0..B-1 by default).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace illia {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

/// The generators this runtime implements (manifest field `noise_generator`).
enum class Generator { V1, V2 };

/// "illia-noise-v1" -> Generator::V1, "illia-noise-v2" -> Generator::V2; anything else throws
/// ManifestError naming the supported ones.
Generator parse_generator(const std::string& name);
const char* generator_name(Generator g);

/// SplitMix64 finalizer.
uint64_t mix64(uint64_t z);

/// The key of noise stream `stream` (manifest position) for `seed` (both generators).
uint64_t stream_key(uint64_t seed, uint64_t stream);

/// The key of one row's noise in a stream: mix64(stream_key + GOLDEN * (word + 1)).
uint64_t row_key(uint64_t stream_key_value, uint64_t word);

/// Splits [0, n) into disjoint ranges with at least `grain` per range and calls fn(begin, end)
/// on each, possibly in parallel (Backend::parallel_for).
using ParallelFor = std::function<void(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn)>;

/// Runs fn(0, n) on the calling thread.
void serial_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

/// Samples [sample_start, sample_start + num_samples) of the stream with key `key`, `n`
/// elements each, into `out` (num_samples * n floats, row-major). Same numbers however
/// `parallel_for` splits the work.
void fill_stream(Generator g, uint64_t key, int64_t n, int64_t sample_start, int64_t num_samples, float* out,
                 const ParallelFor& parallel_for = serial_for);

/// Row-keyed noise of a stream whose per-sample shape is [pre..., rows, post...] (`pre` and
/// `post` the element counts before and after the batch dim): `out` is
/// [num_samples, pre, rows, post]; row b's block (pre * post elements per sample, C order over
/// the remaining dims) is samples [sample_start, sample_start + num_samples) of the stream
/// keyed row_key(key, words[b]).
void fill_rows(Generator g, uint64_t key, const uint64_t* words, int64_t rows, int64_t pre, int64_t post,
               int64_t sample_start, int64_t num_samples, float* out, const ParallelFor& parallel_for = serial_for);

/// v1 samples [sample_start, sample_start + num_samples) of stream `stream`, `n` elements each,
/// written to `out` (num_samples * n floats, row-major). Serial reference entry point.
void standard_normal(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                     float* out);

/// v2 samples [sample_start, sample_start + num_samples) of stream `stream` into `out`.
void standard_normal_v2(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                        float* out);

/// Either generator: samples [sample_start, sample_start + num_samples) into `out` (serial).
void standard_normal(Generator g, uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start,
                     int64_t num_samples, float* out);

}  // namespace illia
