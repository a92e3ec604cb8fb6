#include "illia/npy.h"

#include <climits>
#include <cstdint>
#include <cstring>
#include <fstream>

#include "illia/error.h"

namespace illia {

namespace {

const char kMagic[] = "\x93NUMPY";

// Bounds checked before anything is allocated from a header's claims (a hostile or corrupt
// file must give an NpyError, never bad_alloc): numpy itself refuses headers over 10000 bytes
// unless told otherwise; the data must be in the file.
constexpr uint32_t kMaxHeaderLen = 65536;

// The value of `key` in the header dict, e.g. "'<f4'" or "(64, 784)" (raw text).
std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw NpyError(path + ": .npy header has no '" + key + "'");
  size_t colon = header.find(':', k);
  if (colon == std::string::npos) throw NpyError(path + ": malformed .npy header");
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) throw NpyError(path + ": malformed .npy header");
  size_t end = start;
  if (header[start] == '(') {
    end = header.find(')', start);
    if (end == std::string::npos) throw NpyError(path + ": malformed shape in .npy header");
    return header.substr(start, end - start + 1);
  }
  end = header.find_first_of(",}", start);
  if (end == std::string::npos) throw NpyError(path + ": malformed .npy header");
  return header.substr(start, end - start);
}

int64_t file_size(std::ifstream& in) {
  const auto here = in.tellg();
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  in.seekg(here);
  return size;
}

std::vector<int64_t> parse_shape_tuple(const std::string& tuple, const std::string& path) {
  std::vector<int64_t> shape;
  std::string inner = tuple.substr(1, tuple.size() - 2);
  size_t pos = 0;
  while (pos < inner.size()) {
    size_t comma = inner.find(',', pos);
    std::string tok = inner.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t a = tok.find_first_not_of(' ');
    if (a != std::string::npos) {
      size_t b = tok.find_last_not_of(' ');
      tok = tok.substr(a, b - a + 1);
      if (tok.empty() || tok.size() > 19 || tok.find_first_not_of("0123456789") != std::string::npos)
        throw NpyError(path + ": bad dim '" + tok + "' in .npy shape " + tuple);
      try {
        shape.push_back(std::stoll(tok));
      } catch (const std::out_of_range&) {
        throw NpyError(path + ": dim " + tok + " in .npy shape " + tuple + " does not fit in 64 bits");
      }
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return shape;
}

}  // namespace

Array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError("cannot open " + path);
  char magic[6];
  unsigned char version[2];
  if (!in.read(magic, 6) || std::memcmp(magic, kMagic, 6) != 0 ||
      !in.read(reinterpret_cast<char*>(version), 2))
    throw NpyError(path + " is not a .npy file (bad magic)");
  uint32_t header_len = 0;
  if (version[0] == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) throw NpyError(path + ": truncated .npy header");
    header_len = b[0] | (b[1] << 8);
  } else if (version[0] == 2 || version[0] == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) throw NpyError(path + ": truncated .npy header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw NpyError(path + ": unsupported .npy version " + std::to_string(version[0]));
  }
  const int64_t total_size = file_size(in);
  const int64_t data_start = static_cast<int64_t>(in.tellg()) + static_cast<int64_t>(header_len);
  if (header_len > kMaxHeaderLen)
    throw NpyError(path + ": .npy header length " + std::to_string(header_len) + " exceeds " +
                   std::to_string(kMaxHeaderLen) + " bytes (corrupt or not written by numpy)");
  if (data_start > total_size)
    throw NpyError(path + ": truncated .npy header (" + std::to_string(header_len) + " bytes claimed, the file has " +
                   std::to_string(total_size) + ")");
  std::string header(header_len, '\0');
  if (!in.read(&header[0], header_len)) throw NpyError(path + ": truncated .npy header");

  std::string descr = header_field(header, "descr", path);
  std::string fortran = header_field(header, "fortran_order", path);
  if (fortran.find("True") != std::string::npos)
    throw NpyError(path + ": Fortran-order arrays are not supported; save with np.ascontiguousarray(x)");
  if (descr != "'<f4'" && descr != "'<f8'" && descr != "'<i8'" && descr != "'<i4'")
    throw NpyError(path + ": unsupported dtype " + descr + " (expected little-endian float32, float64, int64 or int32)");
  Array a;
  a.shape = parse_shape_tuple(header_field(header, "shape", path), path);
  // element count and bytes, overflow-checked, against what the file holds
  int64_t count = 1;
  for (int64_t d : a.shape) {
    if (d != 0 && count > INT64_MAX / d)
      throw NpyError(path + ": .npy shape " + shape_str(a.shape) + " has more elements than fit in 64 bits");
    count *= d;
  }
  const int64_t itemsize = descr == "'<f4'" || descr == "'<i4'" ? 4 : 8;
  const int64_t available = total_size - data_start;
  if (count > available / itemsize)
    throw NpyError(path + ": .npy header claims shape " + shape_str(a.shape) + " (" + std::to_string(count) +
                   " elements of " + std::to_string(itemsize) + " bytes) but the file holds " +
                   std::to_string(available) + " data bytes (truncated or corrupt)");
  size_t n = static_cast<size_t>(count);

  auto read_raw = [&](void* dst, size_t bytes) {
    if (!in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes)))
      throw NpyError(path + ": truncated data (expected " + std::to_string(n) + " elements of shape " +
                     shape_str(a.shape) + ")");
  };
  if (descr == "'<f4'") {
    a.dtype = DType::Float32;
    a.f32.resize(n);
    read_raw(a.f32.data(), n * 4);
  } else if (descr == "'<f8'") {
    std::vector<double> tmp(n);
    read_raw(tmp.data(), n * 8);
    a.dtype = DType::Float32;
    a.f32.assign(tmp.begin(), tmp.end());
  } else if (descr == "'<i8'") {
    a.dtype = DType::Int64;
    a.i64.resize(n);
    read_raw(a.i64.data(), n * 8);
  } else if (descr == "'<i4'") {
    std::vector<int32_t> tmp(n);
    read_raw(tmp.data(), n * 4);
    a.dtype = DType::Int64;
    a.i64.assign(tmp.begin(), tmp.end());
  } else {
    throw NpyError(path + ": unsupported dtype " + descr + " (expected little-endian float32, float64, int64 or int32)");
  }
  return a;
}

void write_npy(const std::string& path, const Array& array) {
  std::string header = "{'descr': '";
  header += array.dtype == DType::Float32 ? "<f4" : "<i8";
  header += "', 'fortran_order': False, 'shape': " + shape_str(array.shape) + ", }";
  size_t total = 10 + header.size() + 1;  // magic+version+len, header, '\n'
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw NpyError("cannot write " + path);
  out.write(kMagic, 6);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xFF),
                                static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  size_t n = static_cast<size_t>(array.numel());
  if (array.dtype == DType::Float32)
    out.write(reinterpret_cast<const char*>(array.f32.data()), static_cast<std::streamsize>(n * 4));
  else
    out.write(reinterpret_cast<const char*>(array.i64.data()), static_cast<std::streamsize>(n * 8));
  if (!out) throw NpyError("failed writing " + path);
}

}  // namespace illia
