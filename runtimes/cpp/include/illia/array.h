// A minimal owning n-d array (C order) for inputs and results: float32 or int64.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace illia {

enum class DType { Float32, Int64 };

/// "float32" / "int64".
std::string dtype_name(DType dtype);

struct Array {
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::vector<float> f32;    ///< the elements when dtype == Float32
  std::vector<int64_t> i64;  ///< the elements when dtype == Int64

  /// Number of elements: the product of `shape` (1 for a scalar).
  int64_t numel() const;

  /// A zero-filled float32 array of the given shape.
  static Array zeros(const std::vector<int64_t>& shape);
};

/// "(64, 784)": a shape as Python would print it, for messages.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace illia
