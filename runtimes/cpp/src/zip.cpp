#include "zip.h"

#include <cstdint>
#include <algorithm>
#include <fstream>

namespace illia {

namespace {

uint64_t le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool read_at(std::ifstream& in, uint64_t offset, size_t size, std::vector<unsigned char>* out) {
  out->resize(size);
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(reinterpret_cast<char*>(out->data()), static_cast<std::streamsize>(size));
  return static_cast<size_t>(in.gcount()) == size;
}

}  // namespace

bool zip_entry_names(const std::string& path, std::vector<std::string>* names) {
  names->clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  if (size < 22) return false;
  // End of central directory record: in the last 22 + 65535 (comment) bytes.
  const uint64_t tail_size = std::min<uint64_t>(size, 22 + 65535);
  std::vector<unsigned char> tail;
  if (!read_at(in, size - tail_size, tail_size, &tail)) return false;
  int64_t eocd = -1;
  for (int64_t i = static_cast<int64_t>(tail_size) - 22; i >= 0; --i)
    if (tail[i] == 'P' && tail[i + 1] == 'K' && tail[i + 2] == 5 && tail[i + 3] == 6) {
      eocd = i;
      break;
    }
  if (eocd < 0) return false;
  uint64_t entries = le(&tail[eocd + 10], 2);
  uint64_t cd_size = le(&tail[eocd + 12], 4);
  uint64_t cd_offset = le(&tail[eocd + 16], 4);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    // ZIP64: the locator sits right before the EOCD and points at the ZIP64 EOCD record.
    const uint64_t eocd_pos = size - tail_size + static_cast<uint64_t>(eocd);
    std::vector<unsigned char> loc, rec;
    if (eocd_pos < 20 || !read_at(in, eocd_pos - 20, 20, &loc) || le(&loc[0], 4) != 0x07064b50) return false;
    if (!read_at(in, le(&loc[8], 8), 56, &rec) || le(&rec[0], 4) != 0x06064b50) return false;
    entries = le(&rec[32], 8);
    cd_size = le(&rec[40], 8);
    cd_offset = le(&rec[48], 8);
  }
  if (cd_offset > size || cd_size > size - cd_offset) return false;
  std::vector<unsigned char> cd;
  if (!read_at(in, cd_offset, static_cast<size_t>(cd_size), &cd)) return false;
  size_t pos = 0;
  for (uint64_t e = 0; e < entries; ++e) {
    if (pos + 46 > cd.size() || le(&cd[pos], 4) != 0x02014b50) return false;
    const size_t name_len = le(&cd[pos + 28], 2), extra_len = le(&cd[pos + 30], 2), comment_len = le(&cd[pos + 32], 2);
    if (pos + 46 + name_len > cd.size()) return false;
    names->emplace_back(reinterpret_cast<const char*>(&cd[pos + 46]), name_len);
    pos += 46 + name_len + extra_len + comment_len;
  }
  return true;
}

}  // namespace illia
