// illia-noise-v1: the seeded, counter-based standard normals every illia runtime shares.
//
// Spec (same as illia_export/runtime/noise.py; all integer arithmetic mod 2^64):
//   key_k = mix64(seed + GOLDEN * (k + 1))            k = position of the noise in the manifest
//   a noise with n elements per sample uses m = ceil(n / 2) counters per sample;
//   element pair p of sample s uses c = s * m + p and z = mix64(key_k + GOLDEN * (c + 1));
//   u1 = ((z >> 40) + 0.5) / 2^24,  u2 = (((z >> 16) & 0xFFFFFF) + 0.5) / 2^24;
//   r = sqrt(-2 ln u1), t = 2 pi u2 (double); element 2p = r cos t, element 2p+1 = r sin t
//   (dropped for the last pair when n is odd), rounded to float.
// mix64 is the SplitMix64 finalizer.
#pragma once

#include <cstdint>

namespace illia {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

/// SplitMix64 finalizer.
uint64_t mix64(uint64_t z);

/// The key of noise stream `stream` (manifest position) for `seed`.
uint64_t stream_key(uint64_t seed, uint64_t stream);

/// Fill pairs [pair_begin, pair_end) of a block of samples starting at `sample_start`, each of
/// `n` elements (so ceil(n/2) pairs per sample; pair q is pair q % m of block sample q / m).
/// `block` points at the block's first element (num_samples * n floats). Pair ranges of one
/// block are independent, so callers may fill disjoint ranges in parallel.
void fill_normal_pairs(uint64_t key, int64_t n, int64_t sample_start, int64_t pair_begin, int64_t pair_end,
                       float* block);

/// Samples [sample_start, sample_start + num_samples) of stream `stream`, `n` elements each,
/// written to `out` (num_samples * n floats, row-major). Serial reference entry point.
void standard_normal(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                     float* out);

}  // namespace illia
