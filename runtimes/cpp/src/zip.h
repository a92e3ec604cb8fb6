// Names of the entries of a zip file (central directory only; no decompression): enough to tell
// a TorchScript archive, an AOTInductor package and a plain torch.export .pt2 apart by content.
#pragma once

#include <string>
#include <vector>

namespace illia {

/// The entry names of the zip file at `path`, or false when it is not a readable zip file.
bool zip_entry_names(const std::string& path, std::vector<std::string>* names);

}  // namespace illia
