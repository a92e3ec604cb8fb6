// A small JSON reader: enough of RFC 8259 for illia manifests (objects, arrays, strings with
// escapes, numbers, true/false/null). Not a general-purpose library; no writer.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace illia {
namespace json {

struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  bool is_integer = false;  ///< the number was written without fraction or exponent
  std::string raw;          ///< numbers: the lexeme as written (the digest's canonical JSON reuses it)
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_null() const { return kind == Kind::Null; }
  /// The member `key` of an object, or nullptr when absent (or when this is not an object).
  const Value* find(const std::string& key) const;
};

/// Parse `text`; throws illia::ManifestError with the byte offset on malformed input.
Value parse(const std::string& text);

}  // namespace json
}  // namespace illia
