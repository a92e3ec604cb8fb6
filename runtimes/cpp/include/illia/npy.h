// Minimal .npy (NumPy format 1.0-3.0) reading and writing, little-endian C order.
// Reads float32 and int64 (and, converted, float64 -> float32 and int32 -> int64);
// writes float32 and int64.
#pragma once

#include <string>

#include "illia/array.h"

namespace illia {

/// Read a .npy file; throws NpyError naming the file and the problem.
Array read_npy(const std::string& path);

/// Write `array` as a version 1.0 .npy file; throws NpyError when the file cannot be written.
void write_npy(const std::string& path, const Array& array);

}  // namespace illia
