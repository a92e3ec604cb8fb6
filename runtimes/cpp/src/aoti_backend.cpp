// AOTInductor backend: runs a .pt2 package made by torch._inductor.aoti_compile_and_package
// with LibTorch's AOTIModelPackageLoader (CPU). The package holds the compiled model (a shared
// library with the weights); the manifest is its metadata "illia_export.manifest" (written with
// inductor_configs={"aot_inductor.metadata": {"illia_export.manifest": <JSON>}}). The graph is
// positional: model inputs then noise inputs in, a list of output tensors out, all in manifest
// order.
#include <ATen/Parallel.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <fstream>

#include "illia/backend.h"
#include "illia/error.h"
#include "illia/manifest.h"

namespace illia {

namespace {

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

class AotiBackend : public Backend {
 public:
  explicit AotiBackend(const std::string& path) {
    if (!std::ifstream(path, std::ios::binary))
      throw ArtifactError("artifact not found or unreadable: " + path);
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", /*run_single_threaded=*/false,
                                                                           /*num_runners=*/1, /*device_index=*/-1);
      auto metadata = loader_->get_metadata();
      auto it = metadata.find(kAotiMetadataKey);
      if (it != metadata.end()) manifest_ = it->second;
    } catch (const c10::Error& e) {
      throw ArtifactError(path + " is not a loadable AOTInductor package: " + first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw ArtifactError(path + " is not a loadable AOTInductor package: " + first_line(e.what()));
    }
  }

  std::string embedded_manifest() const override { return manifest_; }

  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) override {
    at::parallel_for(0, n, grain, fn);  // LibTorch's intra-op pool (OpenMP), which the kernels use too
  }

  std::vector<Array> run(const std::vector<TensorRef>& feeds, const std::vector<std::string>&) override {
    c10::InferenceMode guard;
    std::vector<at::Tensor> args;
    args.reserve(feeds.size());
    for (const TensorRef& f : feeds) {
      auto dtype = f.dtype == DType::Float32 ? at::kFloat : at::kLong;
      // from_blob does not copy; the compiled graph only reads its inputs.
      args.push_back(at::from_blob(const_cast<void*>(f.data), f.shape, at::TensorOptions().dtype(dtype)));
    }
    std::vector<at::Tensor> results;
    try {
      results = loader_->run(args);
    } catch (const c10::Error& e) {
      throw Error("the AOTInductor model failed: " + first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error(std::string("the AOTInductor model failed: ") + first_line(e.what()));
    }
    std::vector<Array> outputs;
    outputs.reserve(results.size());
    for (const at::Tensor& t : results) {
      at::Tensor c = t.to(at::kFloat).contiguous();
      Array a;
      a.shape.assign(c.sizes().begin(), c.sizes().end());
      const float* p = c.data_ptr<float>();
      a.f32.assign(p, p + c.numel());
      outputs.push_back(std::move(a));
    }
    return outputs;
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  std::string manifest_;
};

}  // namespace

std::unique_ptr<Backend> load_aoti(const std::string& path) { return std::make_unique<AotiBackend>(path); }

}  // namespace illia
