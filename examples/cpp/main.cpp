// Load an illia-export artifact, run 32 Monte Carlo samples on a batch, read the uncertainty.
// The same code runs every artifact kind the library was built for: with the ONNX Runtime-only
// library (no LibTorch) that is .onnx / .ort; with LibTorch also .pt (TorchScript) and .pt2
// (AOTInductor package).
//
//   illia_example model.onnx x.npy
#include <cstdio>
#include <exception>

#include <illia/npy.h>
#include <illia/predictor.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: illia_example ARTIFACT INPUT.npy\n");
    return 2;
  }
  try {
    // 1. Load once (a service keeps the Predictor): the graph and its manifest (inputs, noise
    //    inputs, task). Errors say what is wrong (illia::ArtifactError, illia::ManifestError).
    illia::Predictor predictor = illia::Predictor::load(argv[1]);

    // 2. Predict: S samples, seeded noise (same numbers as the Python runtime for this seed).
    illia::Array x = illia::read_npy(argv[2]);  // e.g. float32 [batch, 784]
    illia::PredictOptions options;
    options.num_samples = 32;
    options.seed = 0;
    options.strategy = illia::Strategy::Bank;  // reuse the same 32 draws on every call
    illia::Prediction prediction = predictor.predict(x, options);

    // 3. Read the uncertainty of the first output.
    const illia::OutputSummary& out = prediction.outputs[0];
    const int64_t rows = out.mean.shape.empty() ? 1 : out.mean.shape[0];
    const int64_t width = out.mean.numel() / rows;
    for (int64_t r = 0; r < rows; ++r) {
      const float* mean = out.mean.f32.data() + r * width;  // mean logits / mean outputs
      const float* std = out.std.f32.data() + r * width;
      if (out.is_classification()) {
        // Softmax averaged over samples; entropy = total uncertainty, mutual information = the
        // part due to the weights (epistemic): high on inputs unlike the training data.
        const float* p = out.probabilities.f32.data() + r * width;
        int64_t best = 0;
        for (int64_t c = 1; c < width; ++c)
          if (p[c] > p[best]) best = c;
        std::printf("row %lld: class %lld p=%.3f entropy=%.3f mutual_information=%.4f\n",
                    static_cast<long long>(r), static_cast<long long>(best), p[best], out.entropy.f32[r],
                    out.mutual_information.f32[r]);
      } else {
        std::printf("row %lld: mean[0]=%.4f std[0]=%.4f\n", static_cast<long long>(r), mean[0], std[0]);
      }
    }
  } catch (const std::exception& e) {  // illia::Error subclasses say what to fix
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
