#include "illia/array.h"

namespace illia {

std::string dtype_name(DType dtype) { return dtype == DType::Float32 ? "float32" : "int64"; }

int64_t Array::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Array Array::zeros(const std::vector<int64_t>& shape) {
  Array a;
  a.shape = shape;
  a.f32.assign(static_cast<size_t>(a.numel()), 0.0f);
  return a;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

}  // namespace illia
