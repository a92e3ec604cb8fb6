// Monte Carlo summaries: mean and population std (ddof = 0) over samples, and for
// classifiers the predictive entropy and the mutual information (natural log).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "illia/array.h"

namespace illia {

/// The summary of one output over S samples. Shapes are one sample's output shape
/// ([B, ...]); `entropy` and `mutual_information` drop the last (class) axis and are empty
/// unless the task is classification.
struct OutputSummary {
  std::string name;
  Array mean;
  Array std;
  Array entropy;             ///< H[mean_s softmax(logits_s)]
  Array mutual_information;  ///< entropy - mean_s H[softmax(logits_s)]
  int64_t num_samples = 0;
};

/// Accumulates samples of one output in double precision (Welford), one block at a time.
class SummaryAccumulator {
 public:
  /// `sample_shape`: one sample's output shape. With `classification`, the last axis holds
  /// logits: mean and std are taken over softmax probabilities, and entropy / mutual
  /// information are accumulated too.
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
  std::vector<double> mean_, m2_;     // Welford over values (probabilities for classifiers)
  std::vector<double> entropy_sum_;   // sum over samples of per-sample entropy, per row
  std::vector<double> probs_;         // scratch: one sample's probabilities
};

}  // namespace illia
