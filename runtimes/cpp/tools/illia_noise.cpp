// illia-noise: write illia-noise-v1/v2 reference values, to check another implementation
// (Kotlin, Swift, ...) against this one.
//
//   illia-noise SEED STREAM N SAMPLE_START NUM_SAMPLES OUT.npy [GENERATOR]   -> float32 [NUM_SAMPLES, N]
//
// GENERATOR: illia-noise-v1 (default, for compatibility) or illia-noise-v2.
#include <iostream>
#include <string>

#include "illia/noise.h"
#include "illia/npy.h"

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::cerr << "usage: illia-noise SEED STREAM N SAMPLE_START NUM_SAMPLES OUT.npy [illia-noise-v1|illia-noise-v2]\n";
    return 2;
  }
  try {
    const uint64_t seed = std::stoull(argv[1]);
    const uint64_t stream = std::stoull(argv[2]);
    const int64_t n = std::stoll(argv[3]);
    const int64_t start = std::stoll(argv[4]);
    const int64_t count = std::stoll(argv[5]);
    const illia::Generator gen = illia::parse_generator(argc == 8 ? argv[7] : "illia-noise-v1");
    if (n < 0 || start < 0 || count < 0) throw std::invalid_argument("negative size");
    illia::Array out = illia::Array::zeros({count, n});
    illia::standard_normal(gen, seed, stream, n, start, count, out.f32.data());
    illia::write_npy(argv[6], out);
  } catch (const std::exception& e) {
    std::cerr << "illia-noise: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
