// The one place that maps manifest.noise_generator to code (see illia/generators.h).
#include "illia/generators.h"

#include "illia/error.h"

namespace illia {

namespace {

// Every generator this runtime has. Add new ones here (name as the Python side writes it) and
// their arithmetic to illia/noise_core.h.
const NoiseGenerator kGenerators[] = {
    {"illia-noise-v1", Generator::V1},
    {"illia-noise-v2", Generator::V2},
};

}  // namespace

std::vector<std::string> noise_generator_names() {
  std::vector<std::string> names;
  for (const NoiseGenerator& g : kGenerators) names.emplace_back(g.name);
  return names;
}

const NoiseGenerator& noise_generator(const std::string& name) {
  for (const NoiseGenerator& g : kGenerators)
    if (name == g.name) return g;
  std::string have;
  for (const std::string& n : noise_generator_names()) have += (have.empty() ? "" : ", ") + n;
  throw ManifestError("manifest.noise_generator '" + name + "' is not supported by this illia C++ runtime (it has " +
                      have + "); the same seed would give other noise, so update the runtime");
}

}  // namespace illia
