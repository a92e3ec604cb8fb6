// The seeded, counter-based standard normals every illia runtime shares (docs/noise.md is
// normative; the numpy references are illia_export/runtime/noise.py).
//
// illia-noise-v2 (default of new exports): one normal per element, 32-bit arithmetic.
//   key = stream_key(seed, stream);  k0 = low 32 bits of key, k1 = high 32 bits
//   element i of sample s (n elements per sample): counter c = s * n + i (64-bit)
//   h = lowbias32(lo32(c) ^ k0);  h = lowbias32(h ^ (k1 + 0x9E3779B9 * hi32(c)))   (mod 2^32)
//   lowbias32(x): x ^= x >> 16; x *= 0x21F0AAAD; x ^= x >> 15; x *= 0x735A2D97; x ^= x >> 15
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
#pragma once

#include <cstdint>
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

// ------------------------------------------------------------------------------------- v1
/// Fill pairs [pair_begin, pair_end) of a block of samples starting at `sample_start`, each of
/// `n` elements (so ceil(n/2) pairs per sample; pair q is pair q % m of block sample q / m).
/// `block` points at the block's first element (num_samples * n floats). Pair ranges of one
/// block are independent, so callers may fill disjoint ranges in parallel.
void fill_normal_pairs(uint64_t key, int64_t n, int64_t sample_start, int64_t pair_begin, int64_t pair_end,
                       float* block);

/// v1 samples [sample_start, sample_start + num_samples) of stream `stream`, `n` elements each,
/// written to `out` (num_samples * n floats, row-major). Serial reference entry point.
void standard_normal(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                     float* out);

// ------------------------------------------------------------------------------------- v2
/// The 32-bit v2 hash of element counter `counter` under stream key `key`.
uint32_t v2_hash(uint64_t key, uint64_t counter);

/// The v2 normal of one hash (float32 evaluation, within 6e-7 * max(1, |x|) of the spec).
float v2_value(uint32_t h);

/// Fill elements [elem_begin, elem_end) of a block of samples starting at `sample_start`, `n`
/// elements each; `block` points at the block's first element. Element ranges are
/// independent (any split over threads gives the same numbers); the loop vectorizes.
void fill_v2(uint64_t key, int64_t n, int64_t sample_start, int64_t elem_begin, int64_t elem_end, float* block);

/// v2 samples [sample_start, sample_start + num_samples) of stream `stream` into `out`.
void standard_normal_v2(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                        float* out);

/// Either generator: samples [sample_start, sample_start + num_samples) into `out` (serial).
void standard_normal(Generator g, uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start,
                     int64_t num_samples, float* out);

}  // namespace illia
