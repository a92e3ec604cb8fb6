#include "illia/predictor.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#ifdef __linux__
#include <sched.h>
#include <sys/resource.h>
#endif

#include "illia/digest.h"
#include "illia/error.h"
#include "zip.h"

namespace illia {

struct Predictor::Bank {
  uint64_t seed = 0;
  int64_t num_samples = -1;
  std::vector<std::vector<int64_t>> shapes;  // per stream: one sample's shape (depends on the
                                             // inputs' dims for per-example noise)
  std::vector<uint64_t> words;               // the rows' keys words (row-keyed streams)
  std::vector<std::vector<float>> noise;     // per stream: num_samples * numel(shapes[k]) floats
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

// True when an entry's path has the component sequence `piece` (e.g. "data/aotinductor/") at
// its start or right after a '/' (zip archives of torch put everything under "<name>/").
bool has_entry(const std::vector<std::string>& names, const std::string& piece) {
  for (const std::string& n : names) {
    if (n.compare(0, piece.size(), piece) == 0) return true;
    if (n.find("/" + piece) != std::string::npos) return true;
  }
  return false;
}

// Default bound on the noise drawn at once (all streams), as in the Python runtime.
constexpr int64_t kDefaultNoiseBytes = int64_t{512} << 20;

}  // namespace

int usable_cores() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

void Backend::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t cores = usable_cores();
  const int64_t t = std::max<int64_t>(1, std::min<int64_t>(cores, n / std::max<int64_t>(grain, 1)));
  if (t == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t i = 0; i < t; ++i) pool.emplace_back(fn, n * i / t, n * (i + 1) / t);
  for (auto& th : pool) th.join();
}

void Predictor::generate_noise(uint64_t seed, uint64_t stream, const std::vector<int64_t>& shape,
                               const std::vector<uint64_t>& words, int64_t sample_start, int64_t num_samples,
                               float* out) {
  Backend* backend = backend_.get();
  const ParallelFor parallel = [backend](int64_t count, int64_t grain,
                                         const std::function<void(int64_t, int64_t)>& fn) {
    backend->parallel_for(count, grain, fn);
  };
  const NoiseSpec& spec = manifest_.noise[stream];
  const uint64_t key = stream_key(seed, stream);
  const int axis = spec.batch_axis();
  if (axis >= 0 && !spec.folds_batch()) {  // per-example noise: one key per row
    int64_t pre = 1, post = 1;
    for (int d = 0; d < axis; ++d) pre *= shape[d];
    for (size_t d = axis + 1; d < shape.size(); ++d) post *= shape[d];
    fill_rows(generator_->id, key, words.data(), shape[axis], pre, post, sample_start, num_samples, out, parallel);
    return;
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  fill_stream(generator_->id, key, n, sample_start, num_samples, out, parallel);
}

namespace {

// a * b, or ResourceError naming `what` when it does not fit in int64 (sizes from files and flags).
int64_t checked_mul(int64_t a, int64_t b, const std::string& what) {
  if (a < 0 || b < 0 || (a > 0 && b > INT64_MAX / a))
    throw ResourceError(what + " overflows a 64-bit size; lower the number of samples or the batch");
  return a * b;
}

int64_t checked_add(int64_t a, int64_t b, const std::string& what) {
  if (b > INT64_MAX - a) throw ResourceError(what + " overflows a 64-bit size; lower the number of samples or the batch");
  return a + b;
}

int64_t read_int_file(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  try {
    return std::stoll(text);
  } catch (const std::exception&) {
    return -1;  // "max" or a value beyond int64: no limit
  }
}

std::string gib(int64_t bytes) {
  std::ostringstream ss;
  ss.precision(3);
  ss << static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return ss.str();
}

}  // namespace

int64_t available_memory() {
  int64_t best = -1;
  auto take = [&best](int64_t v) {
    if (v >= 0 && (best < 0 || v < best)) best = v;
  };
#ifdef __linux__
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") take(kib * 1024);
  const int64_t v2_max = read_int_file("/sys/fs/cgroup/memory.max");
  if (v2_max >= 0) take(std::max<int64_t>(0, v2_max - std::max<int64_t>(0, read_int_file("/sys/fs/cgroup/memory.current"))));
  const int64_t v1_max = read_int_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  if (v1_max >= 0 && v1_max < (int64_t{1} << 60))
    take(std::max<int64_t>(0, v1_max - std::max<int64_t>(0, read_int_file("/sys/fs/cgroup/memory/memory.usage_in_bytes"))));
  struct rlimit lim;
  if (getrlimit(RLIMIT_AS, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    std::ifstream status("/proc/self/status");
    std::string line;
    int64_t vm = 0;
    while (std::getline(status, line))
      if (line.rfind("VmSize:", 0) == 0) vm = std::atoll(line.c_str() + 7) * 1024;
    take(std::max<int64_t>(0, static_cast<int64_t>(lim.rlim_cur) - vm));
  }
#endif
  return best;
}

ArtifactKind detect_artifact(const std::string& path) {
  if (!std::ifstream(path, std::ios::binary)) throw ArtifactError("artifact not found or unreadable: " + path);
  if (ends_with(path, ".onnx") || ends_with(path, ".ort")) return ArtifactKind::Onnx;
  std::vector<std::string> names;
  const bool zip = zip_entry_names(path, &names);
  if (zip && has_entry(names, "data/aotinductor/")) return ArtifactKind::Aoti;
  if (ends_with(path, ".pt2")) {
    if (!zip)
      throw ArtifactError(path + " is not a .pt2 package (not a zip file); illia-mc runs AOTInductor packages "
                                 "(illia-export format 'aoti')");
    return ArtifactKind::ExportedProgram;
  }
  if (zip && has_entry(names, "archive_format") && !has_entry(names, "data.pkl"))
    return ArtifactKind::ExportedProgram;
  return ArtifactKind::TorchScript;
}

Predictor Predictor::load(const std::string& path, const LoadOptions& options) {
  std::unique_ptr<Backend> backend;
  const char* expected_format = "";
  switch (detect_artifact(path)) {
    case ArtifactKind::Onnx:
      backend = load_onnxruntime(path);
      expected_format = "onnx";
      break;
    case ArtifactKind::Aoti:
      backend = load_aoti(path);
      expected_format = "aoti";
      break;
    case ArtifactKind::ExportedProgram:
      throw ArtifactError(path +
                          " is a plain torch.export ExportedProgram (.pt2 without compiled code), which only "
                          "Python can run; for illia-mc export an AOTInductor package (illia-export format "
                          "'aoti'), TorchScript or ONNX");
    case ArtifactKind::TorchScript:
      backend = load_torchscript(path);
      expected_format = "torchscript";
      break;
  }
  std::string text = backend->embedded_manifest();
  if (text.empty()) text = read_text(path + ".manifest.json");
  if (text.empty())
    throw ManifestError(path + " carries no illia-export manifest (looked for the embedded manifest and for " +
                        path + ".manifest.json); was it exported by illia-export?");
  Manifest manifest = parse_manifest(text);
  if (manifest.format != expected_format)
    throw ManifestError(path + " is a" + (expected_format[0] == 'a' || expected_format[0] == 'o' ? "n " : " ") +
                        expected_format + " artifact but its manifest says format='" + manifest.format + "'");
  if (options.check_digest) verify_digest(path, manifest);  // unchecked only on request
  return Predictor(std::move(backend), std::move(manifest));
}

Predictor::Predictor(std::unique_ptr<Backend> backend, Manifest manifest)
    : backend_(std::move(backend)),
      manifest_(std::move(manifest)),
      bank_(std::make_unique<Bank>()),
      generator_(&noise_generator(manifest_.noise_generator)) {}
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;
Predictor::~Predictor() = default;

DimSizes Predictor::check_inputs(const std::vector<Array>& inputs, bool allow_nonfinite) const {
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
    if (a.dtype == DType::Float32 && !allow_nonfinite) {
      for (size_t j = 0; j < a.f32.size(); ++j)
        if (!std::isfinite(a.f32[j]))
          throw InputError("input '" + spec.name + "' holds " +
                           (std::isnan(a.f32[j]) ? std::string("NaN") : std::string("an infinite value")) +
                           " (at flat index " + std::to_string(j) +
                           "): the summaries would be NaN; clean the input, or allow it explicitly "
                           "(illia-mc --allow-nonfinite, PredictOptions::allow_nonfinite)");
    }
  }
  if (!symbols.count(kBatchDim))  // no input names it: the first input's first dim, as in Python
    symbols[kBatchDim] = !inputs.empty() && !inputs[0].shape.empty() ? inputs[0].shape[0] : 1;
  return symbols;
}

const std::vector<std::vector<float>>& Predictor::bank(uint64_t seed, int64_t num_samples,
                                                       const std::vector<std::vector<int64_t>>& shapes,
                                                       const std::vector<uint64_t>& words) {
  if (bank_->num_samples != num_samples || bank_->seed != seed || bank_->shapes != shapes || bank_->words != words) {
    bank_->noise.clear();  // free the old bank before drawing the new one
    bank_->num_samples = -1;
    for (size_t k = 0; k < shapes.size(); ++k) {
      int64_t n = 1;
      for (int64_t d : shapes[k]) n *= d;
      std::vector<float> buf(static_cast<size_t>(num_samples * n));
      generate_noise(seed, k, shapes[k], words, 0, num_samples, buf.data());
      bank_->noise.push_back(std::move(buf));
    }
    bank_->seed = seed;
    bank_->num_samples = num_samples;
    bank_->shapes = shapes;
    bank_->words = words;
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
  const DimSizes sizes = check_inputs(inputs, options.allow_nonfinite);
  const int64_t batch = sizes.at(kBatchDim);
  const int64_t S = options.num_samples;
  const size_t K = manifest_.noise.size();
  const bool vectorized = manifest_.vectorized;

  // The rows' key words: the caller's ids, else 0..B-1 (one layout in every runtime).
  std::vector<uint64_t> words(static_cast<size_t>(batch));
  if (options.row_ids.empty()) {
    for (int64_t b = 0; b < batch; ++b) words[b] = static_cast<uint64_t>(b);
  } else {
    if (static_cast<int64_t>(options.row_ids.size()) != batch)
      throw InputError(std::to_string(options.row_ids.size()) + " row ids for a batch of " + std::to_string(batch) +
                       " rows; give one id per row");
    for (int64_t b = 0; b < batch; ++b) words[b] = static_cast<uint64_t>(options.row_ids[b]);
    for (const NoiseSpec& spec : manifest_.noise)
      if (spec.folds_batch())
        throw InputError("noise input '" + spec.name + "' folds the batch with other axes (" + dims_str(spec.shape) +
                         "); its rows cannot be keyed, so row ids are unavailable for this artifact");
  }

  // Everything large is sized here, before it is allocated (checked against overflow and the
  // memory the process may use).
  std::vector<std::vector<int64_t>> shapes(K);
  std::vector<int64_t> numels(K);  // noise floats per sample, per stream
  int64_t per_sample = 0;          // all streams
  for (size_t k = 0; k < K; ++k) {
    shapes[k] = manifest_.noise[k].event_shape(sizes);
    int64_t n = 1;
    for (int64_t d : shapes[k]) n = checked_mul(n, d, "noise '" + manifest_.noise[k].name + "'");
    numels[k] = n;
    per_sample = checked_add(per_sample, n, "the noise of one sample");
    // every counter of a stream must be distinct (64-bit): S * n < 2^63
    checked_mul(S, n, "the noise counters of '" + manifest_.noise[k].name + "' (" + std::to_string(S) + " samples)");
  }
  int64_t out_per_sample = 0;  // output floats per sample (unknown symbolic dims count 1)
  for (const TensorSpec& t : manifest_.outputs) {
    int64_t n = 1;
    for (size_t d = vectorized ? 1 : 0; d < t.shape.size(); ++d) {
      const Dim& dim = t.shape[d];
      int64_t v = dim.is_static() ? dim.value : 1;
      if (!dim.is_static() && sizes.count(dim.symbol)) v = sizes.at(dim.symbol);
      n = checked_mul(n, std::max<int64_t>(v, 1), "the output '" + t.name + "'");
    }
    out_per_sample = checked_add(out_per_sample, n, "the outputs of one sample");
  }
  const int64_t bytes_per_sample = checked_mul(4, checked_add(per_sample, 2 * out_per_sample, "one sample"), "one sample");
  // Samples whose noise is drawn at once: vectorized graphs take them in one call, per-call
  // graphs run them one by one from the same buffer (fewer, larger noise jobs).
  const int64_t chunk = std::min(
      S, options.chunk_size > 0 ? options.chunk_size
                                : std::max<int64_t>(1, kDefaultNoiseBytes / std::max<int64_t>(bytes_per_sample, 1)));
  const bool use_bank = options.strategy == Strategy::Bank;
  const int64_t bank_bytes = use_bank ? checked_mul(S, checked_mul(4, per_sample, "the bank"), "the noise bank") : 0;
  const int64_t chunk_bytes = checked_mul(chunk, bytes_per_sample, "a chunk of " + std::to_string(chunk) + " samples");
  const int64_t need = checked_add(bank_bytes, chunk_bytes, "the prediction");
  const int64_t budget = options.memory_budget > 0 ? options.memory_budget : available_memory();
  if (budget >= 0 && need > budget)
    throw ResourceError("the prediction needs about " + gib(need) + " (" +
                        (use_bank ? "a bank of " + std::to_string(S) + " samples' noise, " : std::string()) +
                        "noise and outputs of a chunk of " + std::to_string(chunk) + " samples) but " + gib(budget) +
                        " is available to this process; lower --samples" +
                        (use_bank ? " or use --strategy fresh" : std::string()) +
                        (options.chunk_size > 0 ? " or --chunk-size" : std::string()));
  const std::vector<std::vector<float>>* banked = use_bank ? &bank(options.seed, S, shapes, words) : nullptr;

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
    r.shape = shapes[k];
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
      const int64_t n = numels[k];
      if (banked) {
        noise[k] = (*banked)[k].data() + start * n;
      } else {
        fresh[k].resize(static_cast<size_t>(count * n));
        generate_noise(options.seed, k, shapes[k], words, start, count, fresh[k].data());
        noise[k] = fresh[k].data();
      }
    }
    if (vectorized) {
      call(noise, count);
    } else {
      for (int64_t j = 0; j < count; ++j) {
        std::vector<const float*> one(K);
        for (size_t k = 0; k < K; ++k) one[k] = noise[k] + j * numels[k];
        call(one, 1);
      }
    }
  }
  Prediction result;
  for (size_t o = 0; o < acc.size(); ++o) result.outputs.push_back(acc[o].finish(manifest_.outputs[o].name));
  return result;
}

// Loaders of backends left out of this build: say which build brings them.
#ifndef ILLIA_WITH_ORT
std::unique_ptr<Backend> load_onnxruntime(const std::string& path) {
  throw ArtifactError(path +
                      ": this illia runtime was built without ONNX Runtime; load a TorchScript or AOTInductor "
                      "artifact, or rebuild with -DILLIA_WITH_ORT=ON (scripts/build-cpp.sh does; see docs/cpp.md)");
}
#endif
#ifndef ILLIA_WITH_TORCH
std::unique_ptr<Backend> load_torchscript(const std::string& path) {
  throw ArtifactError(path +
                      ": this illia runtime was built without LibTorch (ONNX Runtime only), so it cannot run "
                      "TorchScript archives; load the ONNX artifact, or build with LibTorch (scripts/build-cpp.sh "
                      "without --ort-only)");
}
#endif
#ifndef ILLIA_WITH_AOTI
std::unique_ptr<Backend> load_aoti(const std::string& path) {
  throw ArtifactError(path +
                      " is an AOTInductor package, and this illia runtime was built without its backend "
                      "(LibTorch); load the ONNX artifact, or build with LibTorch (scripts/build-cpp.sh without "
                      "--ort-only)");
}
#endif

}  // namespace illia
