#include "illia/predictor.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "illia/error.h"
#include "illia/noise.h"

namespace illia {

struct Predictor::Bank {
  uint64_t seed = 0;
  int64_t num_samples = -1;
  std::vector<std::vector<float>> noise;  // per stream: num_samples * event_numel floats
};

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Element pairs below which splitting the noise over threads does not pay.
constexpr int64_t kNoiseGrain = 1 << 15;
// Default bound on the noise drawn at once (all streams), as in the Python runtime.
constexpr int64_t kDefaultNoiseBytes = int64_t{512} << 20;

}  // namespace

void Backend::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t t = std::max<int64_t>(1, std::min<int64_t>(cores, n / std::max<int64_t>(grain, 1)));
  if (t == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t i = 0; i < t; ++i) pool.emplace_back(fn, n * i / t, n * (i + 1) / t);
  for (auto& th : pool) th.join();
}

void Predictor::generate_noise(uint64_t seed, uint64_t stream, int64_t n, int64_t sample_start,
                               int64_t num_samples, float* out) {
  const uint64_t key = stream_key(seed, stream);
  if (parse_generator(manifest_.noise_generator) == Generator::V2) {  // one normal per element
    backend_->parallel_for(num_samples * n, 2 * kNoiseGrain, [&](int64_t begin, int64_t end) {
      fill_v2(key, n, sample_start, begin, end, out);
    });
    return;
  }
  const int64_t pairs = num_samples * ((n + 1) / 2);
  backend_->parallel_for(pairs, kNoiseGrain, [&](int64_t begin, int64_t end) {
    fill_normal_pairs(key, n, sample_start, begin, end, out);
  });
}

Predictor Predictor::load(const std::string& path) {
  std::unique_ptr<Backend> backend;
  if (ends_with(path, ".onnx") || ends_with(path, ".ort"))
    backend = load_onnxruntime(path);
  else
    backend = load_torchscript(path);
  std::string text = backend->embedded_manifest();
  if (text.empty()) text = read_text(path + ".manifest.json");
  if (text.empty())
    throw ManifestError(path + " carries no illia-export manifest (looked for the embedded manifest and for " +
                        path + ".manifest.json); was it exported by illia-export?");
  return Predictor(std::move(backend), parse_manifest(text));
}

Predictor::Predictor(std::unique_ptr<Backend> backend, Manifest manifest)
    : backend_(std::move(backend)), manifest_(std::move(manifest)), bank_(std::make_unique<Bank>()) {}
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;
Predictor::~Predictor() = default;

void Predictor::check_inputs(const std::vector<Array>& inputs) const {
  const auto& specs = manifest_.inputs;
  if (inputs.size() != specs.size())
    throw ShapeError("the artifact takes " + std::to_string(specs.size()) + " input(s), got " +
                     std::to_string(inputs.size()));
  std::map<std::string, int64_t> symbols;  // a symbolic dim ("batch") must agree across inputs
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    const Array& a = inputs[i];
    const std::string expected = "expected " + dims_str(spec.shape) + ", got " + shape_str(a.shape);
    if (a.shape.size() != spec.shape.size())
      throw ShapeError("input '" + spec.name + "': rank " + std::to_string(a.shape.size()) + " != " +
                       std::to_string(spec.shape.size()) + " (" + expected + ")");
    for (size_t d = 0; d < a.shape.size(); ++d) {
      const Dim& dim = spec.shape[d];
      if (dim.is_static() && dim.value != a.shape[d])
        throw ShapeError("input '" + spec.name + "': dim " + std::to_string(d) + " is " + std::to_string(a.shape[d]) +
                         ", the artifact needs " + std::to_string(dim.value) + " (" + expected + ")");
      if (!dim.is_static()) {
        auto it = symbols.emplace(dim.symbol, a.shape[d]).first;
        if (it->second != a.shape[d])
          throw ShapeError("input '" + spec.name + "': dim '" + dim.symbol + "' is " + std::to_string(a.shape[d]) +
                           " but another input has " + std::to_string(it->second));
      }
    }
    if (dtype_name(a.dtype) != spec.dtype)
      throw ShapeError("input '" + spec.name + "': dtype " + dtype_name(a.dtype) + ", the artifact needs " + spec.dtype);
  }
}

const std::vector<std::vector<float>>& Predictor::bank(uint64_t seed, int64_t num_samples) {
  if (bank_->num_samples != num_samples || bank_->seed != seed) {
    bank_->noise.clear();
    for (size_t k = 0; k < manifest_.noise.size(); ++k) {
      const int64_t n = manifest_.noise[k].event_numel();
      std::vector<float> buf(static_cast<size_t>(num_samples * n));
      generate_noise(seed, k, n, 0, num_samples, buf.data());
      bank_->noise.push_back(std::move(buf));
    }
    bank_->seed = seed;
    bank_->num_samples = num_samples;
  }
  return bank_->noise;
}

Prediction Predictor::predict(const Array& input, const PredictOptions& options) {
  return predict(std::vector<Array>{input}, options);
}

Prediction Predictor::predict(const std::vector<Array>& inputs, const PredictOptions& options) {
  if (options.num_samples < 1)
    throw Error("num_samples must be >= 1, got " + std::to_string(options.num_samples));
  if (options.chunk_size < 0) throw Error("chunk_size must be >= 0, got " + std::to_string(options.chunk_size));
  check_inputs(inputs);
  const int64_t S = options.num_samples;
  const size_t K = manifest_.noise.size();
  const bool vectorized = manifest_.vectorized;
  int64_t per_sample = 0;  // noise floats per sample, all streams
  for (const NoiseSpec& n : manifest_.noise) per_sample += n.event_numel();
  // Samples whose noise is drawn at once: vectorized graphs take them in one call, per-call
  // graphs run them one by one from the same buffer (fewer, larger noise jobs).
  const int64_t chunk = std::min(
      S, options.chunk_size > 0 ? options.chunk_size
                                : std::max<int64_t>(1, kDefaultNoiseBytes / (4 * std::max<int64_t>(per_sample, 1))));
  const std::vector<std::vector<float>>* banked = options.strategy == Strategy::Bank ? &bank(options.seed, S) : nullptr;

  std::vector<std::string> output_names;
  for (const TensorSpec& t : manifest_.outputs) output_names.push_back(t.name);
  std::vector<TensorRef> feeds;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Array& a = inputs[i];
    TensorRef r;
    r.name = manifest_.inputs[i].name;
    r.dtype = a.dtype;
    r.shape = a.shape;
    r.data = a.dtype == DType::Float32 ? static_cast<const void*>(a.f32.data()) : a.i64.data();
    feeds.push_back(r);
  }
  for (size_t k = 0; k < K; ++k) {
    TensorRef r;
    r.name = manifest_.noise[k].name;
    r.shape = manifest_.noise[k].event_shape();
    if (vectorized) r.shape.insert(r.shape.begin(), 0);  // set per chunk
    feeds.push_back(r);
  }
  std::vector<std::vector<float>> fresh(K);
  std::vector<SummaryAccumulator> acc;

  // One graph call on `count` samples whose noise starts at noise[k] for stream k.
  auto call = [&](const std::vector<const float*>& noise, int64_t count) {
    for (size_t k = 0; k < K; ++k) {
      TensorRef& r = feeds[inputs.size() + k];
      r.data = noise[k];
      if (vectorized) r.shape[0] = count;
    }
    std::vector<Array> outs = backend_->run(feeds, output_names);
    if (outs.size() != manifest_.outputs.size())
      throw ArtifactError("the graph returned " + std::to_string(outs.size()) + " output(s), the manifest lists " +
                          std::to_string(manifest_.outputs.size()));
    for (size_t o = 0; o < outs.size(); ++o) {
      std::vector<int64_t> sample_shape = outs[o].shape;
      if (vectorized) {
        if (sample_shape.empty() || sample_shape[0] != count)
          throw ArtifactError("output '" + manifest_.outputs[o].name + "' has shape " + shape_str(outs[o].shape) +
                              "; a vectorized artifact must put the " + std::to_string(count) + " samples first");
        sample_shape.erase(sample_shape.begin());
      }
      if (acc.size() <= o) {
        const bool classification = manifest_.task == "classification" && o == 0;
        acc.emplace_back(sample_shape, classification);
      } else if (acc[o].sample_shape() != sample_shape) {
        throw ArtifactError("output '" + manifest_.outputs[o].name + "' changed shape between samples");
      }
      acc[o].add(outs[o].f32.data(), count);
    }
  };

  for (int64_t start = 0; start < S; start += chunk) {
    const int64_t count = std::min(chunk, S - start);
    std::vector<const float*> noise(K);
    for (size_t k = 0; k < K; ++k) {
      const int64_t n = manifest_.noise[k].event_numel();
      if (banked) {
        noise[k] = (*banked)[k].data() + start * n;
      } else {
        fresh[k].resize(static_cast<size_t>(count * n));
        generate_noise(options.seed, k, n, start, count, fresh[k].data());
        noise[k] = fresh[k].data();
      }
    }
    if (vectorized) {
      call(noise, count);
    } else {
      for (int64_t j = 0; j < count; ++j) {
        std::vector<const float*> one(K);
        for (size_t k = 0; k < K; ++k) one[k] = noise[k] + j * manifest_.noise[k].event_numel();
        call(one, 1);
      }
    }
  }
  Prediction result;
  for (size_t o = 0; o < acc.size(); ++o) result.outputs.push_back(acc[o].finish(manifest_.outputs[o].name));
  return result;
}

#ifndef ILLIA_WITH_ORT
std::unique_ptr<Backend> load_onnxruntime(const std::string& path) {
  throw ArtifactError(path +
                      ": this illia runtime was built without ONNX Runtime; load the TorchScript artifact, or "
                      "rebuild with -DILLIA_WITH_ORT=ON -DONNXRUNTIME_ROOT=<official ONNX Runtime release> "
                      "(see docs/cpp.md)");
}
#endif

}  // namespace illia
