#include "illia/summary.h"

#include <algorithm>
#include <cmath>

#include "illia/error.h"

namespace illia {

SummaryAccumulator::SummaryAccumulator(std::vector<int64_t> sample_shape, bool classification)
    : shape_(std::move(sample_shape)), classification_(classification) {
  for (int64_t d : shape_) numel_ *= d;
  if (classification_) {
    if (shape_.empty() || shape_.back() < 1)
      throw ShapeError("a classification output needs a class axis (logits last), got shape " + shape_str(shape_));
    classes_ = shape_.back();
    entropy_sum_.assign(static_cast<size_t>(numel_ / classes_), 0.0);
    prob_sum_.assign(static_cast<size_t>(numel_), 0.0);
  }
  mean_.assign(static_cast<size_t>(numel_), 0.0);
  m2_.assign(static_cast<size_t>(numel_), 0.0);
}

void SummaryAccumulator::add(const float* samples, int64_t count) {
  for (int64_t s = 0; s < count; ++s) {
    const float* x = samples + s * numel_;
    if (classification_) {
      const int64_t rows = numel_ / classes_;
      std::vector<double> p(static_cast<size_t>(classes_));
      for (int64_t r = 0; r < rows; ++r) {
        const float* logits = x + r * classes_;
        double mx = logits[0];
        for (int64_t c = 1; c < classes_; ++c) mx = std::max(mx, static_cast<double>(logits[c]));
        double total = 0.0;
        for (int64_t c = 0; c < classes_; ++c) total += (p[c] = std::exp(logits[c] - mx));
        double h = 0.0;
        for (int64_t c = 0; c < classes_; ++c) {
          p[c] /= total;
          if (p[c] > 0.0) h -= p[c] * std::log(p[c]);
          prob_sum_[r * classes_ + c] += p[c];
        }
        entropy_sum_[static_cast<size_t>(r)] += h;
      }
    }
    ++count_;
    const double k = static_cast<double>(count_);
    for (int64_t i = 0; i < numel_; ++i) {
      const double v = static_cast<double>(x[i]);
      const double delta = v - mean_[i];
      mean_[i] += delta / k;
      m2_[i] += delta * (v - mean_[i]);
    }
  }
}

OutputSummary SummaryAccumulator::finish(const std::string& name) const {
  if (count_ == 0) throw Error("no samples were accumulated for output '" + name + "'");
  OutputSummary out;
  out.name = name;
  out.num_samples = count_;
  out.mean = Array::zeros(shape_);
  out.std = Array::zeros(shape_);
  for (int64_t i = 0; i < numel_; ++i) {
    out.mean.f32[i] = static_cast<float>(mean_[i]);
    out.std.f32[i] = static_cast<float>(std::sqrt(std::max(0.0, m2_[i] / static_cast<double>(count_))));
  }
  if (classification_) {
    std::vector<int64_t> row_shape(shape_.begin(), shape_.end() - 1);
    out.probabilities = Array::zeros(shape_);
    out.entropy = Array::zeros(row_shape);
    out.expected_entropy = Array::zeros(row_shape);
    out.mutual_information = Array::zeros(row_shape);
    const double inv = 1.0 / static_cast<double>(count_);
    const int64_t rows = numel_ / classes_;
    for (int64_t r = 0; r < rows; ++r) {
      double h = 0.0;
      for (int64_t c = 0; c < classes_; ++c) {
        const double p = prob_sum_[r * classes_ + c] * inv;
        out.probabilities.f32[r * classes_ + c] = static_cast<float>(p);
        if (p > 0.0) h -= p * std::log(p);
      }
      const double expected = entropy_sum_[r] * inv;
      out.entropy.f32[r] = static_cast<float>(h);
      out.expected_entropy.f32[r] = static_cast<float>(expected);
      out.mutual_information.f32[r] = static_cast<float>(std::max(h - expected, 0.0));
    }
  }
  return out;
}

}  // namespace illia
