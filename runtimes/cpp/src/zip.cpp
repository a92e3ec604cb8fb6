#include "zip.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>

#ifdef ILLIA_HAVE_ZLIB
#include <zlib.h>
#endif

#include "illia/error.h"

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

bool zip_entries(const std::string& path, std::vector<ZipEntry>* out) {
  out->clear();
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
    if (pos + 46 + name_len + extra_len > cd.size()) return false;
    ZipEntry ent;
    ent.name.assign(reinterpret_cast<const char*>(&cd[pos + 46]), name_len);
    ent.method = static_cast<uint16_t>(le(&cd[pos + 10], 2));
    ent.crc = static_cast<uint32_t>(le(&cd[pos + 16], 4));
    ent.compressed_size = le(&cd[pos + 20], 4);
    ent.size = le(&cd[pos + 24], 4);
    ent.local_offset = le(&cd[pos + 42], 4);
    // ZIP64 extra field (id 1): the 64-bit values of the fields saturated above, in this order
    size_t x = pos + 46 + name_len;
    const size_t x_end = x + extra_len;
    while (x + 4 <= x_end) {
      const uint64_t id = le(&cd[x], 2), len = le(&cd[x + 2], 2);
      if (x + 4 + len > x_end) return false;
      if (id == 1) {
        size_t f = x + 4;
        auto take = [&](uint64_t* v) {
          if (*v == 0xFFFFFFFF && f + 8 <= x + 4 + len) {
            *v = le(&cd[f], 8);
            f += 8;
          }
        };
        take(&ent.size);
        take(&ent.compressed_size);
        take(&ent.local_offset);
      }
      x += 4 + len;
    }
    if (ent.local_offset > size || ent.compressed_size > size) return false;
    out->push_back(std::move(ent));
    pos += 46 + name_len + extra_len + comment_len;
  }
  return true;
}

bool zip_entry_names(const std::string& path, std::vector<std::string>* names) {
  names->clear();
  std::vector<ZipEntry> entries;
  if (!zip_entries(path, &entries)) return false;
  for (const ZipEntry& e : entries) names->push_back(e.name);
  return true;
}

namespace {

uint32_t crc32_update(uint32_t crc, const unsigned char* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

}  // namespace

void zip_stream_entry(const std::string& path, const ZipEntry& entry,
                      const std::function<void(const unsigned char*, size_t)>& sink) {
  const std::string where = path + ": zip member '" + entry.name + "'";
  std::ifstream in(path, std::ios::binary);
  std::vector<unsigned char> local;
  if (!in || !read_at(in, entry.local_offset, 30, &local) || le(&local[0], 4) != 0x04034b50)
    throw ArtifactError(where + " has no valid local header (corrupt or truncated archive)");
  const uint64_t data_offset = entry.local_offset + 30 + le(&local[26], 2) + le(&local[28], 2);
  in.clear();
  in.seekg(static_cast<std::streamoff>(data_offset));
  constexpr size_t kPiece = size_t{1} << 20;
  std::vector<unsigned char> buf(kPiece);
  uint64_t produced = 0;
  uint32_t crc = 0;
  auto emit = [&](const unsigned char* p, size_t n) {
    produced += n;
    if (produced > entry.size)  // never trust a member to stop where it says: bound it
      throw ArtifactError(where + " holds more than its recorded " + std::to_string(entry.size) +
                          " bytes (corrupt or crafted archive)");
    crc = crc32_update(crc, p, n);
    sink(p, n);
  };
  auto read_piece = [&](uint64_t left) -> size_t {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kPiece));
    in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(n));
    if (static_cast<size_t>(in.gcount()) != n) throw ArtifactError(where + " is truncated");
    return n;
  };
  if (entry.method == 0) {
    if (entry.compressed_size != entry.size)
      throw ArtifactError(where + " is stored with a compressed size != its size (corrupt archive)");
    for (uint64_t left = entry.size; left > 0;) {
      const size_t n = read_piece(left);
      emit(buf.data(), n);
      left -= n;
    }
  } else if (entry.method == 8) {
#ifdef ILLIA_HAVE_ZLIB
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw ArtifactError(where + ": zlib inflateInit failed");
    std::vector<unsigned char> out(kPiece);
    int ret = Z_OK;
    try {
      for (uint64_t left = entry.compressed_size; ret != Z_STREAM_END;) {
        if (zs.avail_in == 0) {
          if (left == 0) throw ArtifactError(where + " ends before its deflate stream does (corrupt archive)");
          const size_t n = read_piece(left);
          left -= n;
          zs.next_in = buf.data();
          zs.avail_in = static_cast<uInt>(n);
        }
        zs.next_out = out.data();
        zs.avail_out = static_cast<uInt>(out.size());
        ret = inflate(&zs, Z_NO_FLUSH);
        if (ret != Z_OK && ret != Z_STREAM_END)
          throw ArtifactError(where + " has a corrupt deflate stream (zlib error " + std::to_string(ret) + ")");
        emit(out.data(), out.size() - zs.avail_out);
      }
    } catch (...) {
      inflateEnd(&zs);
      throw;
    }
    inflateEnd(&zs);
#else
    throw ArtifactError(where + " is deflate-compressed and this illia runtime was built without zlib, so it cannot "
                                "check the artifact's digest; rebuild with zlib, or pass --no-digest-check to run it "
                                "unchecked");
#endif
  } else {
    throw ArtifactError(where + " uses zip compression method " + std::to_string(entry.method) +
                        ", which this runtime cannot read (stored and deflate only)");
  }
  if (produced != entry.size)
    throw ArtifactError(where + " has " + std::to_string(produced) + " bytes, its header records " +
                        std::to_string(entry.size) + " (corrupt archive)");
  if (crc != entry.crc) throw ArtifactError(where + " fails its CRC-32 check (corrupt archive)");
}

}  // namespace illia
