#include "illia/digest.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "illia/error.h"
#include "illia/json.h"
#include "zip.h"

namespace illia {

// ------------------------------------------------------------------------------------ SHA-256
namespace {

constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

}  // namespace

Sha256::Sha256()
    : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::block(const unsigned char* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) | p[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
}

void Sha256::update(const void* data, size_t size) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  bits_ += static_cast<uint64_t>(size) * 8;
  while (size > 0) {
    if (used_ == 0 && size >= 64) {
      block(p);
      p += 64;
      size -= 64;
      continue;
    }
    const size_t n = std::min(size, 64 - used_);
    std::memcpy(buf_ + used_, p, n);
    used_ += n;
    p += n;
    size -= n;
    if (used_ == 64) {
      block(buf_);
      used_ = 0;
    }
  }
}

std::string Sha256::hex() {
  const uint64_t bits = bits_;
  const unsigned char one = 0x80, zero = 0;
  update(&one, 1);
  while (used_ != 56) update(&zero, 1);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
  update(len, 8);
  char out[65];
  for (int i = 0; i < 8; ++i) std::snprintf(out + 8 * i, 9, "%08x", h_[i]);
  return std::string(out, 64);
}

// ------------------------------------------------------------------------------------ formats
namespace {

constexpr int kOnnxMetadataField = 14;
constexpr uint64_t kMaxMetadataJson = uint64_t{64} << 20;

uint64_t varint(const std::string& data, size_t* pos) {
  uint64_t result = 0;
  for (int shift = 0;; shift += 7) {
    if (shift > 63) throw ArtifactError("corrupt protobuf (varint longer than 10 bytes)");
    if (*pos >= data.size()) throw ArtifactError("truncated protobuf (varint runs past the end of the file)");
    const unsigned char byte = static_cast<unsigned char>(data[(*pos)++]);
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return result;
  }
}

void hash_onnx(const std::string& path, Sha256* h) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ArtifactError("cannot read " + path + " to check its digest");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  while (pos < data.size()) {
    const size_t start = pos;
    const uint64_t tag = varint(data, &pos);
    const uint64_t field = tag >> 3, wire = tag & 7;
    if (field == 0) throw ArtifactError(path + ": corrupt protobuf (field number 0)");
    uint64_t skip = 0;
    if (wire == 0) {
      varint(data, &pos);
    } else if (wire == 1) {
      skip = 8;
    } else if (wire == 2) {
      skip = varint(data, &pos);
    } else if (wire == 5) {
      skip = 4;
    } else {
      throw ArtifactError(path + ": corrupt protobuf (wire type " + std::to_string(wire) + " at byte " +
                          std::to_string(start) + ")");
    }
    if (skip > data.size() - pos)
      throw ArtifactError(path + ": truncated protobuf (field " + std::to_string(field) + " at byte " +
                          std::to_string(start) + " runs past the end of the file)");
    pos += static_cast<size_t>(skip);
    if (field != kOnnxMetadataField) h->update(data.data() + start, pos - start);
  }
}

void put_le64(Sha256* h, uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
  h->update(b, 8);
}

// Python's json.dumps(value, sort_keys=True) (separators ", " / ": ", ensure_ascii).
void dump_string(const std::string& s, std::string* out) {
  *out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0x80) {  // decode UTF-8 (the parser produced valid UTF-8)
      len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      cp = c & (len == 4 ? 0x07 : len == 3 ? 0x0F : 0x1F);
      for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    i += len;
    char esc[16];
    switch (cp) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (cp < 0x20 || (cp >= 0x7F && cp < 0x10000)) {
          std::snprintf(esc, sizeof esc, "\\u%04x", cp);
          *out += esc;
        } else if (cp >= 0x10000) {
          const uint32_t v = cp - 0x10000;
          std::snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          *out += esc;
        } else {
          *out += static_cast<char>(cp);
        }
    }
  }
  *out += '"';
}

// compact: the scheme-2 canonical form (separators "," ":" and numbers as written); otherwise
// Python's default json.dumps separators, integers only (AOTInductor metadata).
void dump(const json::Value& v, std::string* out, bool compact = false) {
  switch (v.kind) {
    case json::Value::Kind::Null: *out += "null"; break;
    case json::Value::Kind::Bool: *out += v.boolean ? "true" : "false"; break;
    case json::Value::Kind::Number: {
      if (compact) {  // a manifest Python wrote holds Python's repr of each number
        *out += v.raw;
        break;
      }
      if (!v.is_integer)  // Python's float repr is not reproduced here: refuse, do not guess
        throw ArtifactError("AOTInductor metadata holds a non-integer number; its digest cannot be recomputed here");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.0f", v.number);
      *out += buf;
      break;
    }
    case json::Value::Kind::String: dump_string(v.string, out); break;
    case json::Value::Kind::Array: {
      *out += '[';
      for (size_t i = 0; i < v.array.size(); ++i) {
        if (i) *out += compact ? "," : ", ";
        dump(v.array[i], out, compact);
      }
      *out += ']';
      break;
    }
    case json::Value::Kind::Object: {
      *out += '{';
      bool first = true;
      for (const auto& kv : v.object) {  // std::map: sorted by UTF-8 bytes = code points
        if (!first) *out += compact ? "," : ", ";
        first = false;
        dump_string(kv.first, out);
        *out += compact ? ":" : ": ";
        dump(kv.second, out, compact);
      }
      *out += '}';
      break;
    }
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void hash_zip(const std::string& path, const std::string& format, Sha256* h) {
  std::vector<ZipEntry> entries;
  if (!zip_entries(path, &entries)) throw ArtifactError(path + " is not a readable " + format + " archive (not a zip file)");
  std::vector<std::pair<std::string, size_t>> names;  // (name without the top folder, index)
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string& name = entries[i].name;
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t slash; (slash = name.find('/', start)) != std::string::npos; start = slash + 1)
      parts.push_back(name.substr(start, slash - start));
    parts.push_back(name.substr(start));
    const size_t n = parts.size();
    if (n >= 2 && parts[n - 2] == "extra" && parts[n - 1] == kEmbeddedName) continue;
    if (n >= 2 && parts[n - 2] == ".data" && parts[n - 1] == "serialization_id") continue;
    if (ends_with(name, ".debug_pkl")) continue;
    const size_t slash = name.find('/');
    const std::string tail = slash == std::string::npos ? "" : name.substr(slash + 1);
    names.emplace_back(tail.empty() ? name : tail, i);
  }
  std::sort(names.begin(), names.end(), [&](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : entries[a.second].name < entries[b.second].name;
  });
  for (const auto& [short_name, index] : names) {
    const ZipEntry& e = entries[index];
    if (format == "aoti" && ends_with(e.name, "_metadata.json")) {
      if (e.size > kMaxMetadataJson)
        throw ArtifactError(path + ": metadata member '" + e.name + "' is larger than 64 MiB");
      std::string text;
      zip_stream_entry(path, e, [&](const unsigned char* p, size_t n) { text.append(reinterpret_cast<const char*>(p), n); });
      json::Value meta;
      try {
        meta = json::parse(text);
      } catch (const Error& err) {
        throw ArtifactError(path + ": metadata member '" + e.name + "' is not valid JSON: " + err.what());
      }
      if (meta.kind == json::Value::Kind::Object) meta.object.erase(kAotiMetadataKey);
      std::string canon;
      dump(meta, &canon);
      put_le64(h, short_name.size());
      h->update(short_name.data(), short_name.size());
      put_le64(h, canon.size());
      h->update(canon.data(), canon.size());
      continue;
    }
    put_le64(h, short_name.size());
    h->update(short_name.data(), short_name.size());
    put_le64(h, e.size);
    zip_stream_entry(path, e, [&](const unsigned char* p, size_t n) { h->update(p, n); });
  }
}

bool valid_digest_text(const std::string& d) {
  if (d.size() != 7 + 64 || d.compare(0, 7, "sha256:") != 0) return false;
  for (size_t i = 7; i < d.size(); ++i)
    if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f'))) return false;
  return true;
}

}  // namespace

std::string compute_digest(const std::string& path, const std::string& format) {
  Sha256 h;
  if (format == "onnx")
    hash_onnx(path, &h);
  else if (format == "torchscript" || format == "pt2" || format == "aoti")
    hash_zip(path, format, &h);
  else
    throw ArtifactError("no digest is defined for format '" + format + "' in this runtime");
  return "sha256:" + h.hex();
}

std::string canonical_manifest_json(const json::Value& root) {
  json::Value covered = root;
  for (const char* key : {"digest", "validation", "extra"}) covered.object.erase(key);
  std::string out;
  dump(covered, &out, true);
  return out;
}

std::string compute_digest_v2(const std::string& path, const Manifest& manifest) {
  const std::string graph = compute_digest(path, manifest.format);
  Sha256 h;
  const std::string head = "illia-digest-v2\n" + graph + "\n";
  h.update(head.data(), head.size());
  h.update(manifest.canonical.data(), manifest.canonical.size());
  return "sha256:" + h.hex();
}

void verify_digest(const std::string& path, const Manifest& manifest, bool allow_missing) {
  if (manifest.format == "onnx" && (ends_with(path, ".ort") || ends_with(path, ".ORT")))
    return;  // an ORT-format conversion keeps the .onnx file's manifest (and digest), not its bytes
  if (manifest.digest.empty()) {
    if (allow_missing) return;
    throw ArtifactError(path + " records no digest in its manifest, so it cannot be checked for corruption or "
                               "tampering; re-export it with a current illia-export, or run it unchecked with "
                               "--no-digest-check (LoadOptions::check_digest = false)");
  }
  if (!valid_digest_text(manifest.digest))
    throw ManifestError("manifest.digest must look like 'sha256:<64 hex digits>', got '" + manifest.digest.substr(0, 80) +
                        "'");
  if (manifest.digest_scheme != 2) {
    if (allow_missing) return;
    throw ArtifactError(path + " has a digest of its graph bytes only (digest scheme 1): nothing ties its noise list, "
                               "generator and dims to the graph. Re-export it with a current illia-export, or run it "
                               "unchecked with --no-digest-check");
  }
  const std::string got = compute_digest_v2(path, manifest);
  if (got != manifest.digest)
    throw ArtifactError(path + ": the graph bytes or the manifest's sampling fields do not match the digest in the "
                        "manifest (recorded " + manifest.digest.substr(0, 19) + "..., file has " + got.substr(0, 19) +
                        "...): the artifact was corrupted or modified after export; re-export it");
}

}  // namespace illia
