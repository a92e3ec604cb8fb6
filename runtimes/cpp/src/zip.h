// Reading zip files (TorchScript archives, AOTInductor packages): the central directory, and
// members streamed in bounded pieces (stored, or deflated when the build has zlib), each checked
// against its CRC-32 and its recorded size. Enough to tell the artifact kinds apart by content
// and to hash the members for the artifact digest (illia/digest.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace illia {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  ///< 0 stored, 8 deflated
  uint32_t crc = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;  ///< uncompressed
  uint64_t local_offset = 0;
};

/// The entry names of the zip file at `path`, or false when it is not a readable zip file.
bool zip_entry_names(const std::string& path, std::vector<std::string>* names);

/// The entries of the zip file at `path`, or false when it is not a readable zip file.
bool zip_entries(const std::string& path, std::vector<ZipEntry>* entries);

/// Stream member `entry` of the zip at `path` to `sink` in pieces of at most 1 MiB, never
/// holding more; checks its size and CRC-32. Throws ArtifactError naming the member when it is
/// corrupt, truncated, larger than recorded, or compressed with a method this build cannot read.
void zip_stream_entry(const std::string& path, const ZipEntry& entry,
                      const std::function<void(const unsigned char*, size_t)>& sink);

}  // namespace illia
