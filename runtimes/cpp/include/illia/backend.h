// An inference engine that runs one artifact graph: model inputs then noise in, outputs out.
// Implementations: TorchScript and AOTInductor packages (LibTorch: ILLIA_WITH_TORCH,
// ILLIA_WITH_AOTI) and ONNX Runtime (ILLIA_WITH_ORT). A loader whose backend was not built
// throws ArtifactError saying which build option brings it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "illia/array.h"

namespace illia {

/// A borrowed, C-order tensor handed to a backend (never written to).
struct TensorRef {
  std::string name;  ///< the graph input's name (manifest); positional backends ignore it
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  /// The manifest JSON embedded in the artifact, or "" when the artifact carries none.
  virtual std::string embedded_manifest() const = 0;

  /// Run the graph once. `feeds` are the model inputs (manifest.inputs order) followed by the
  /// noise tensors (manifest.noise order); returns the outputs named `output_names`
  /// (manifest.outputs order) as float32 arrays.
  virtual std::vector<Array> run(const std::vector<TensorRef>& feeds, const std::vector<std::string>& output_names) = 0;

  /// Call fn(begin, end) on disjoint ranges covering [0, n), on the engine's own thread pool
  /// (so that noise generation does not fight the engine's threads for the cores). The base
  /// version uses up to hardware_concurrency std::threads, with at least `grain` per range.
  virtual void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
};

/// CPU cores this process may run on (its affinity mask on Linux, else hardware_concurrency).
int usable_cores();

/// Load a TorchScript archive (torch.jit.save) on CPU; throws ArtifactError when unreadable.
/// Needs a build with ILLIA_WITH_TORCH.
std::unique_ptr<Backend> load_torchscript(const std::string& path);

/// Load an AOTInductor package (.pt2 from torch._inductor.aoti_compile_and_package) on CPU with
/// LibTorch's AOTIModelPackageLoader; its manifest is the package metadata
/// "illia_export.manifest". Needs a build with ILLIA_WITH_AOTI.
std::unique_ptr<Backend> load_aoti(const std::string& path);

/// Load an ONNX (.onnx) or ORT-format (.ort) model with ONNX Runtime's CPU provider.
/// Needs a build with ILLIA_WITH_ORT.
std::unique_ptr<Backend> load_onnxruntime(const std::string& path);

/// What Predictor::load makes of a file, by extension and (for zips) by content.
enum class ArtifactKind { Onnx, TorchScript, Aoti, ExportedProgram };

/// Tell the kind of artifact at `path`: .onnx / .ort -> Onnx; a zip holding
/// `<name>/data/aotinductor/` -> Aoti; another .pt2 (or a zip with `<name>/archive_format`) ->
/// ExportedProgram (a plain torch.export program, Python-only); anything else -> TorchScript.
/// Throws ArtifactError when the file does not exist.
ArtifactKind detect_artifact(const std::string& path);

}  // namespace illia
