// ONNX Runtime backend (built with -DILLIA_WITH_ORT=ON). Runs .onnx and .ort (ORT format)
// artifacts on the CPU execution provider; the manifest comes from the model's metadata_props
// ("illia_export.manifest"), which ORT format conversion keeps.
//
// ORT's C API is versioned: the headers ask the library for API version ORT_API_VERSION
// (OrtGetApiBase()->GetApi), which every later library still serves. So the headers of one
// release (scripts/fetch-ort-headers.sh takes Debian's, API 21) work with the libonnxruntime.so
// of a newer one (the onnxruntime pip wheel's). The API is initialized on first use, not by a
// static initializer, so that a too-old library gives an error instead of a crash.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdlib>
#include <fstream>
#include <mutex>

#include "illia/backend.h"
#include "illia/error.h"
#include "illia/manifest.h"

namespace illia {

namespace {

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

void init_ort_api() {
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    const OrtApiBase* base = OrtGetApiBase();
    const OrtApi* api = base ? base->GetApi(ORT_API_VERSION) : nullptr;
    if (api == nullptr)
      failure = std::string("the ONNX Runtime library (version ") + (base ? base->GetVersionString() : "unknown") +
                ") does not serve C API version " + std::to_string(ORT_API_VERSION) +
                " that this illia runtime was compiled for; use ONNX Runtime 1." + std::to_string(ORT_API_VERSION) +
                " or newer";
    else
      Ort::InitApi(api);
  });
  if (!failure.empty()) throw ArtifactError(failure);
}

Ort::Env& ort_env() {
  static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "illia");
  return env;
}

class OnnxRuntimeBackend : public Backend {
 public:
  explicit OnnxRuntimeBackend(const std::string& path) {
    if (!std::ifstream(path, std::ios::binary))
      throw ArtifactError("artifact not found or unreadable: " + path);
    init_ort_api();
    try {
      Ort::SessionOptions options;
      options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      // As the Python runtime: one op at a time, on the cores this process may use.
      options.SetIntraOpNumThreads(usable_cores());
      options.SetInterOpNumThreads(1);
      if (const char* spin = std::getenv("ILLIA_ORT_ALLOW_SPINNING"); spin && std::string(spin) == "0")
        options.AddConfigEntry("session.intra_op.allow_spinning", "0");
      session_ = std::make_unique<Ort::Session>(ort_env(), path.c_str(), options);
      Ort::AllocatorWithDefaultOptions allocator;
      Ort::ModelMetadata metadata = session_->GetModelMetadata();
      Ort::AllocatedStringPtr text = metadata.LookupCustomMetadataMapAllocated(kOnnxMetadataKey, allocator);
      if (text) manifest_ = text.get();
    } catch (const Ort::Exception& e) {
      throw ArtifactError(path + " is not a loadable ONNX / ORT model: " + first_line(e.what()));
    }
  }

  std::string embedded_manifest() const override { return manifest_; }

  std::vector<Array> run(const std::vector<TensorRef>& feeds, const std::vector<std::string>& output_names) override {
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> values;
    std::vector<const char*> input_names;
    values.reserve(feeds.size());
    for (const TensorRef& f : feeds) {
      int64_t n = 1;
      for (int64_t d : f.shape) n *= d;
      // CreateTensor wraps the caller's buffer without copying; ORT only reads inputs.
      if (f.dtype == DType::Float32)
        values.push_back(Ort::Value::CreateTensor<float>(memory, static_cast<float*>(const_cast<void*>(f.data)),
                                                         static_cast<size_t>(n), f.shape.data(), f.shape.size()));
      else
        values.push_back(Ort::Value::CreateTensor<int64_t>(memory, static_cast<int64_t*>(const_cast<void*>(f.data)),
                                                           static_cast<size_t>(n), f.shape.data(), f.shape.size()));
      input_names.push_back(f.name.c_str());
    }
    std::vector<const char*> out_names;
    for (const std::string& name : output_names) out_names.push_back(name.c_str());
    std::vector<Ort::Value> results;
    try {
      results = session_->Run(Ort::RunOptions{nullptr}, input_names.data(), values.data(), values.size(),
                              out_names.data(), out_names.size());
    } catch (const Ort::Exception& e) {
      throw Error("the ONNX Runtime session failed: " + first_line(e.what()));
    }
    std::vector<Array> outputs;
    for (size_t i = 0; i < results.size(); ++i) {
      Ort::TensorTypeAndShapeInfo info = results[i].GetTensorTypeAndShapeInfo();
      if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        throw ArtifactError("output '" + output_names[i] + "' is not float32 (ONNX element type " +
                            std::to_string(static_cast<int>(info.GetElementType())) +
                            "); the C++ runtime summarizes float32 outputs only");
      Array a;
      a.shape = info.GetShape();
      const float* p = results[i].GetTensorData<float>();
      a.f32.assign(p, p + info.GetElementCount());
      outputs.push_back(std::move(a));
    }
    return outputs;
  }

 private:
  std::unique_ptr<Ort::Session> session_;
  std::string manifest_;
};

}  // namespace

std::unique_ptr<Backend> load_onnxruntime(const std::string& path) {
  return std::make_unique<OnnxRuntimeBackend>(path);
}

}  // namespace illia
