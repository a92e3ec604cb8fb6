// Typed errors of the illia C++ runtime. Messages say what was expected, what was found,
// and how to fix it; the illia-mc tool prints them on stderr and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace illia {

/// Base class of every error the library throws on purpose.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A manifest is missing, is not valid JSON, or does not follow the artifact contract.
class ManifestError : public Error {
 public:
  using Error::Error;
};

/// A file is not a usable artifact (missing, corrupt, wrong format).
class ArtifactError : public Error {
 public:
  using Error::Error;
};

/// An input array has the wrong rank, dims or dtype for the artifact.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// An input's values are refused (NaN/inf without allow_nonfinite, row ids not matching the
/// batch).
class InputError : public Error {
 public:
  using Error::Error;
};

/// A prediction would need more memory than the process may use (sized before allocating),
/// or sizes overflow.
class ResourceError : public Error {
 public:
  using Error::Error;
};

/// A .npy file cannot be read or written.
class NpyError : public Error {
 public:
  using Error::Error;
};

}  // namespace illia
