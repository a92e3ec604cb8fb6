// The noise generators this runtime has, by the name a manifest gives (manifest.noise_generator).
// A seed reproduces only with the generator the artifact was exported for, so a Predictor
// refuses a manifest naming one it lacks. Adding a generator is its arithmetic in
// illia/noise_core.h and one entry in src/noise_generators.cpp.
#pragma once

#include <string>
#include <vector>

#include "illia/noise.h"

namespace illia {

struct NoiseGenerator {
  const char* name;
  /// The arithmetic (fill_stream / fill_rows in illia/noise.h).
  Generator id;
};

/// The generator called `name`; throws ManifestError naming the generators this runtime has.
const NoiseGenerator& noise_generator(const std::string& name);

/// Names of the generators this runtime has ("illia-noise-v1", ...).
std::vector<std::string> noise_generator_names();

}  // namespace illia
