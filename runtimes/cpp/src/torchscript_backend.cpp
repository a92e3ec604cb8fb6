// TorchScript backend: torch::jit::load with the manifest read from the archive's extra files.
#include <ATen/Parallel.h>
#include <ATen/core/ivalue.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <fstream>

#include "illia/backend.h"
#include "illia/error.h"
#include "illia/manifest.h"

namespace illia {

namespace {

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

class TorchScriptBackend : public Backend {
 public:
  explicit TorchScriptBackend(const std::string& path) {
    if (!std::ifstream(path, std::ios::binary))
      throw ArtifactError("artifact not found or unreadable: " + path);
    torch::jit::ExtraFilesMap extra{{kEmbeddedName, ""}};
    try {
      module_ = torch::jit::load(path, c10::Device(c10::kCPU), extra);
    } catch (const c10::Error& e) {
      throw ArtifactError(path + " is not a loadable TorchScript archive: " + first_line(e.what_without_backtrace()));
    }
    module_.eval();
    manifest_ = extra[kEmbeddedName];
  }

  std::string embedded_manifest() const override { return manifest_; }

  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) override {
    at::parallel_for(0, n, grain, fn);  // LibTorch's intra-op pool (OpenMP)
  }

  std::vector<Array> run(const std::vector<TensorRef>& feeds, const std::vector<std::string>&) override {
    // A TorchScript artifact's forward is positional: inputs then noise; outputs in order.
    c10::InferenceMode guard;
    std::vector<torch::jit::IValue> args;
    args.reserve(feeds.size());
    for (const TensorRef& f : feeds) {
      auto dtype = f.dtype == DType::Float32 ? at::kFloat : at::kLong;
      // from_blob does not copy; the graph only reads its inputs.
      args.emplace_back(at::from_blob(const_cast<void*>(f.data), f.shape, at::TensorOptions().dtype(dtype)));
    }
    torch::jit::IValue result;
    try {
      result = module_.forward(args);
    } catch (const c10::Error& e) {
      throw Error("the TorchScript graph failed: " + first_line(e.what_without_backtrace()));
    }
    std::vector<Array> outputs;
    if (result.isTensor()) {
      outputs.push_back(to_array(result.toTensor()));
    } else if (result.isTuple()) {
      for (const auto& v : result.toTupleRef().elements()) outputs.push_back(to_array(v.toTensor()));
    } else if (result.isTensorList()) {
      for (const at::Tensor& t : result.toTensorVector()) outputs.push_back(to_array(t));
    } else {
      throw ArtifactError("the TorchScript graph returned " + result.tagKind() +
                          "; an illia artifact returns a Tensor or a tuple of Tensors");
    }
    return outputs;
  }

 private:
  torch::jit::Module module_;
  std::string manifest_;

  static Array to_array(const at::Tensor& t) {
    at::Tensor c = t.to(at::kFloat).contiguous();
    Array a;
    a.shape.assign(c.sizes().begin(), c.sizes().end());
    const float* p = c.data_ptr<float>();
    a.f32.assign(p, p + c.numel());
    return a;
  }
};

}  // namespace

std::unique_ptr<Backend> load_torchscript(const std::string& path) {
  return std::make_unique<TorchScriptBackend>(path);
}

}  // namespace illia
