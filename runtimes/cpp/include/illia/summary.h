// Monte Carlo summaries, as in the Python runtime (illia_export.runtime.Prediction): mean and
// population std (ddof = 0) over samples of the raw output (logits for classifiers), and for
// classifiers the mean softmax, predictive entropy, expected entropy and mutual information
// (natural log, nats).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "illia/array.h"

namespace illia {

/// The summary of one output over S samples. `mean` and `std` have one sample's output shape
/// ([B, ...]). The classification fields are empty unless the output was summarized as
/// logits: `probabilities` has the output's shape, the entropies drop the last (class) axis.
struct OutputSummary {
  std::string name;
  Array mean;                ///< mean_s x_s (raw output: logits for classifiers)
  Array std;                 ///< sqrt(mean_s (x_s - mean)^2), ddof = 0
  Array probabilities;       ///< p = mean_s softmax(logits_s)
  Array entropy;             ///< predictive entropy H[p]: total uncertainty
  Array expected_entropy;    ///< mean_s H[softmax(logits_s)]: the aleatoric part
  Array mutual_information;  ///< max(entropy - expected_entropy, 0): the epistemic part
  int64_t num_samples = 0;
  bool is_classification() const { return !probabilities.f32.empty() || !probabilities.shape.empty(); }
};

/// Accumulates samples of one output in double precision (Welford), one block at a time.
class SummaryAccumulator {
 public:
  /// `sample_shape`: one sample's output shape. With `classification`, the last axis holds
  /// logits and the softmax-based measures are accumulated too.
  SummaryAccumulator(std::vector<int64_t> sample_shape, bool classification);

  /// Add `count` consecutive samples (`count * numel(sample_shape)` floats, C order).
  void add(const float* samples, int64_t count);

  OutputSummary finish(const std::string& name) const;

  const std::vector<int64_t>& sample_shape() const { return shape_; }

 private:
  std::vector<int64_t> shape_;
  bool classification_;
  int64_t numel_ = 1;
  int64_t classes_ = 1;
  int64_t count_ = 0;
  std::vector<double> mean_, m2_;     // Welford over the raw values
  std::vector<double> prob_sum_;      // classification: sum over samples of softmax
  std::vector<double> entropy_sum_;   // classification: sum over samples of per-sample entropy, per row
};

}  // namespace illia
