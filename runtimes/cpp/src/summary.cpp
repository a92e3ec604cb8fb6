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
    probs_.resize(static_cast<size_t>(numel_));
  }
  mean_.assign(static_cast<size_t>(numel_), 0.0);
  m2_.assign(static_cast<size_t>(numel_), 0.0);
}

void SummaryAccumulator::add(const float* samples, int64_t count) {
  for (int64_t s = 0; s < count; ++s) {
    const float* x = samples + s * numel_;
    const double* values = nullptr;
    if (classification_) {
      const int64_t rows = numel_ / classes_;
      for (int64_t r = 0; r < rows; ++r) {
        const float* logits = x + r * classes_;
        double* p = probs_.data() + r * classes_;
        double mx = logits[0];
        for (int64_t c = 1; c < classes_; ++c) mx = std::max(mx, static_cast<double>(logits[c]));
        double total = 0.0;
        for (int64_t c = 0; c < classes_; ++c) total += (p[c] = std::exp(logits[c] - mx));
        double h = 0.0;
        for (int64_t c = 0; c < classes_; ++c) {
          p[c] /= total;
          if (p[c] > 0.0) h -= p[c] * std::log(p[c]);
        }
        entropy_sum_[static_cast<size_t>(r)] += h;
      }
      values = probs_.data();
    }
    ++count_;
    const double k = static_cast<double>(count_);
    for (int64_t i = 0; i < numel_; ++i) {
      const double v = values ? values[i] : static_cast<double>(x[i]);
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
    out.entropy = Array::zeros(row_shape);
    out.mutual_information = Array::zeros(row_shape);
    const int64_t rows = numel_ / classes_;
    for (int64_t r = 0; r < rows; ++r) {
      double h = 0.0;
      for (int64_t c = 0; c < classes_; ++c) {
        const double p = mean_[r * classes_ + c];
        if (p > 0.0) h -= p * std::log(p);
      }
      out.entropy.f32[r] = static_cast<float>(h);
      out.mutual_information.f32[r] = static_cast<float>(h - entropy_sum_[r] / static_cast<double>(count_));
    }
  }
  return out;
}

}  // namespace illia
