// The library's noise API around the one shared kernel, illia/noise_core.h (also compiled into
// the Python runtime's extension). This is the only translation unit of the library that
// includes the core, and CMakeLists.txt compiles it with the kernel's flags (-O3
// -fno-trapping-math -fno-math-errno -ffp-contract=off), the same as setup.py, so both runtimes
// run the same vectorized, FMA-free code and give the same bits.
#include "illia/noise.h"

#include <algorithm>
#include <vector>

#include "illia/error.h"
#include "illia/noise_core.h"

namespace illia {

namespace {

// Elements below which splitting the noise over threads does not pay.
constexpr int64_t kNoiseGrain = 1 << 16;

core::Job job_of(Generator g, uint64_t key, int64_t n, int64_t sample_start, float* out) {
  return core::Job{g == Generator::V2 ? 2 : 1, key, n, sample_start, out, nullptr, nullptr};
}

}  // namespace

Generator parse_generator(const std::string& name) {
  if (name == "illia-noise-v1") return Generator::V1;
  if (name == "illia-noise-v2") return Generator::V2;
  throw ManifestError("unknown noise generator '" + name +
                      "': this runtime implements illia-noise-v1, illia-noise-v2 (an artifact from a newer "
                      "illia-export? upgrade the runtime)");
}

const char* generator_name(Generator g) { return g == Generator::V2 ? "illia-noise-v2" : "illia-noise-v1"; }

uint64_t mix64(uint64_t z) { return core::mix64(z); }

uint64_t stream_key(uint64_t seed, uint64_t stream) { return core::stream_key(seed, stream); }

uint64_t row_key(uint64_t stream_key_value, uint64_t word) { return core::row_key(stream_key_value, word); }

void serial_for(int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& fn) { fn(0, n); }

void fill_stream(Generator g, uint64_t key, int64_t n, int64_t sample_start, int64_t num_samples, float* out,
                 const ParallelFor& parallel_for) {
  if (n <= 0 || num_samples <= 0) return;
  const core::Job job = job_of(g, key, n, sample_start, out);
  parallel_for(num_samples * n, kNoiseGrain, [&](int64_t begin, int64_t end) { core::run_range(job, begin, end); });
}

void fill_rows(Generator g, uint64_t key, const uint64_t* words, int64_t rows, int64_t pre, int64_t post,
               int64_t sample_start, int64_t num_samples, float* out, const ParallelFor& parallel_for) {
  const int64_t n_row = pre * post;  // one row's elements per sample
  if (n_row <= 0 || rows <= 0 || num_samples <= 0) return;
  const int64_t n = n_row * rows;  // one sample of the whole input
  // one task per (sample, row): the row's block of that sample
  const int64_t grain = std::max<int64_t>(1, kNoiseGrain / n_row);
  parallel_for(num_samples * rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> tmp(pre > 1 ? static_cast<size_t>(n_row) : 0);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t s = t / rows, b = t - s * rows;
      float* sample = out + s * n;
      // the row's block is contiguous when the batch dim comes first; else gather it after
      float* dst = pre > 1 ? tmp.data() : sample + b * post;
      const core::Job job = job_of(g, core::row_key(key, words[b]), n_row, sample_start + s, dst);
      core::run_range(job, 0, n_row);
      if (pre > 1)
        for (int64_t a = 0; a < pre; ++a)
          std::copy(tmp.begin() + a * post, tmp.begin() + (a + 1) * post, sample + (a * rows + b) * post);
    }
  });
}

void standard_normal(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                     float* out) {
  fill_stream(Generator::V1, stream_key(seed, stream), n, sample_start, num_samples, out);
}

void standard_normal_v2(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start, int64_t num_samples,
                        float* out) {
  fill_stream(Generator::V2, stream_key(seed, stream), n, sample_start, num_samples, out);
}

void standard_normal(Generator g, uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start,
                     int64_t num_samples, float* out) {
  fill_stream(g, stream_key(seed, stream), n, sample_start, num_samples, out);
}

}  // namespace illia
