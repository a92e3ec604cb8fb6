// ONNX Runtime backend (built only with -DILLIA_WITH_ORT=ON against an official ONNX Runtime
// release: its include/onnxruntime_cxx_api.h and lib/libonnxruntime.so). Runs .onnx and
// .ort (ORT format) artifacts on the CPU execution provider; the manifest comes from the
// model's metadata_props ("illia_export.manifest"), which ORT format conversion keeps.
#include <onnxruntime_cxx_api.h>

#include <fstream>

#include "illia/backend.h"
#include "illia/error.h"
#include "illia/manifest.h"

namespace illia {

namespace {

Ort::Env& ort_env() {
  static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "illia");
  return env;
}

class OnnxRuntimeBackend : public Backend {
 public:
  explicit OnnxRuntimeBackend(const std::string& path) {
    if (!std::ifstream(path, std::ios::binary))
      throw ArtifactError("artifact not found or unreadable: " + path);
    try {
      Ort::SessionOptions options;
      options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      session_ = std::make_unique<Ort::Session>(ort_env(), path.c_str(), options);
      Ort::AllocatorWithDefaultOptions allocator;
      Ort::ModelMetadata metadata = session_->GetModelMetadata();
      Ort::AllocatedStringPtr text = metadata.LookupCustomMetadataMapAllocated(kOnnxMetadataKey, allocator);
      if (text) manifest_ = text.get();
    } catch (const Ort::Exception& e) {
      throw ArtifactError(path + " is not a loadable ONNX / ORT model: " + e.what());
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
      throw Error(std::string("the ONNX Runtime session failed: ") + e.what());
    }
    std::vector<Array> outputs;
    for (size_t i = 0; i < results.size(); ++i) {
      Ort::TensorTypeAndShapeInfo info = results[i].GetTensorTypeAndShapeInfo();
      if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        throw ArtifactError("output '" + output_names[i] + "' is not float32");
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
