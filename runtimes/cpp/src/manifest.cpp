#include "illia/manifest.h"

#include "illia/digest.h"
#include "illia/noise.h"

#include <climits>
#include <iomanip>
#include <set>
#include <sstream>
#include <tuple>

#include "illia/error.h"
#include "illia/json.h"

namespace illia {

std::vector<int64_t> NoiseSpec::event_shape(const DimSizes& sizes) const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < shape.size(); ++i) {
    const Dim& d = shape[i];
    if (d.is_static()) {
      out.push_back(d.value);
    } else if (d.multiple > 0) {
      auto it = sizes.find(d.name);
      if (it == sizes.end())  // parse_manifest makes sure an input has it
        throw ShapeError("noise '" + name + "': no input gives the size of dim '" + d.name + "'");
      if (it->second > 0 && d.multiple > INT64_MAX / it->second)
        throw ShapeError("noise '" + name + "': dim '" + d.symbol + "' overflows for " + d.name + " = " +
                         std::to_string(it->second));
      out.push_back(d.multiple * it->second);
    }
    // else: the sample axis, which parse_manifest allows only first
  }
  return out;
}

int NoiseSpec::batch_axis() const {
  int axis = 0;
  for (const Dim& d : shape) {
    if (d.symbol == kSampleDim) continue;
    if (d.is_batch()) return axis;
    ++axis;
  }
  return -1;
}

bool NoiseSpec::folds_batch() const {
  for (const Dim& d : shape)
    if (d.name == kBatchDim && d.multiple > 1) return true;
  return false;
}

std::string dims_str(const std::vector<Dim>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += shape[i].is_static() ? std::to_string(shape[i].value) : shape[i].symbol;
  }
  return s + "]";
}

namespace {

std::string number_str(double v) {
  std::ostringstream ss;
  ss << std::setprecision(17) << v;
  return ss.str();
}

const char* const kFormats[] = {"onnx", "torchscript", "savedmodel", "tflite", "pt2", "aoti"};
/// Split "<k>*<name>" (k >= 1 without a leading zero, at most 12 digits) into (name, k), and a
/// plain "<name>" into (name, 1); (symbol, 0) when the text is neither (e.g. "2*", "0*batch").
std::pair<std::string, int64_t> split_multiple(const std::string& symbol) {
  const size_t star = symbol.find('*');
  if (star == std::string::npos) return {symbol, 1};
  const std::string k = symbol.substr(0, star), name = symbol.substr(star + 1);
  if (k.empty() || k.size() > 12 || k[0] == '0' || name.empty() || name.find('*') != std::string::npos)
    return {symbol, 0};
  int64_t v = 0;
  for (char c : k) {
    if (c < '0' || c > '9') return {symbol, 0};
    v = v * 10 + (c - '0');
  }
  return {name, v};
}

const json::Value& require(const json::Value& obj, const std::string& key, const std::string& where) {
  const json::Value* v = obj.find(key);
  if (!v) throw ManifestError(where + ": missing required field '" + key + "'");
  return *v;
}

std::string require_string(const json::Value& obj, const std::string& key, const std::string& where) {
  const json::Value& v = require(obj, key, where);
  if (v.kind != json::Value::Kind::String) throw ManifestError(where + "." + key + " must be a string");
  return v.string;
}

std::string optional_string(const json::Value& obj, const std::string& key, const std::string& fallback,
                            const std::string& where) {
  const json::Value* v = obj.find(key);
  if (!v || v->is_null()) return fallback;
  if (v->kind != json::Value::Kind::String) throw ManifestError(where + "." + key + " must be a string");
  return v->string;
}

std::vector<Dim> parse_shape(const json::Value& obj, const std::string& where) {
  const json::Value& v = require(obj, "shape", where);
  if (v.kind != json::Value::Kind::Array) throw ManifestError(where + ": 'shape' must be a list");
  std::vector<Dim> dims;
  for (const json::Value& d : v.array) {
    Dim dim;
    if (d.kind == json::Value::Kind::String) {
      dim.symbol = d.string.empty() ? "?" : d.string;
      if (dim.symbol != kSampleDim) std::tie(dim.name, dim.multiple) = split_multiple(dim.symbol);
    } else if (d.kind == json::Value::Kind::Number && d.is_integer && d.number >= 0) {
      dim.value = static_cast<int64_t>(d.number);
    } else {
      throw ManifestError(where + ": dims must be non-negative integers or strings");
    }
    dims.push_back(dim);
  }
  return dims;
}

const std::vector<json::Value>& require_list(const json::Value& obj, const std::string& key) {
  const json::Value& v = require(obj, key, "manifest");
  if (v.kind != json::Value::Kind::Array) throw ManifestError("manifest." + key + " must be a list");
  return v.array;
}

TensorSpec parse_tensor(const json::Value& obj, const std::string& where) {
  if (obj.kind != json::Value::Kind::Object) throw ManifestError(where + ": expected an object");
  TensorSpec t;
  t.name = require_string(obj, "name", where);
  t.shape = parse_shape(obj, where);
  t.dtype = optional_string(obj, "dtype", "float32", where);
  if (t.dtype != "float32" && t.dtype != "int64")
    throw ManifestError(where + ": dtype '" + t.dtype + "' is not supported by the C++ runtime (float32, int64)");
  return t;
}

}  // namespace

Manifest parse_manifest(const std::string& text) {
  json::Value root = json::parse(text);
  if (root.kind != json::Value::Kind::Object) throw ManifestError("a manifest must be a JSON object");
  Manifest m;
  const json::Value& contract = require(root, "contract", "manifest");
  if (contract.kind != json::Value::Kind::Number || !contract.is_integer)
    throw ManifestError("manifest.contract must be an integer");
  if (contract.number < kOldestContractVersion || contract.number > kContractVersion)
    throw ManifestError("manifest contract version " + number_str(contract.number) +
                        " is not supported (this runtime reads versions " + std::to_string(kOldestContractVersion) +
                        " to " + std::to_string(kContractVersion) + "; a newer illia-export wrote it?)");
  m.contract = static_cast<int>(contract.number);
  m.format = require_string(root, "format", "manifest");
  bool known_format = false;
  for (const char* f : kFormats) known_format = known_format || m.format == f;
  if (!known_format)
    throw ManifestError("unknown format '" + m.format +
                        "' in manifest.format; expected onnx, torchscript, savedmodel, tflite, pt2 or aoti");
  // Which generator must make the noise; whether this runtime has it is decided in one place,
  // illia::noise_generator() (src/noise_generators.cpp), when a Predictor is made.
  m.noise_generator = optional_string(root, "noise_generator", kDefaultNoiseGenerator, "manifest");
  m.source = optional_string(root, "source", "", "manifest");
  m.digest = optional_string(root, "digest", "", "manifest");
  if (const json::Value* scheme = root.find("digest_scheme"); scheme && !scheme->is_null()) {
    if (scheme->kind != json::Value::Kind::Number || !scheme->is_integer || scheme->number < 1 || scheme->number > 2)
      throw ManifestError("manifest.digest_scheme must be 1 or 2");
    m.digest_scheme = static_cast<int>(scheme->number);
  }
  m.canonical = canonical_manifest_json(root);
  m.task = optional_string(root, "task", "raw", "manifest");
  if (m.task != "classification" && m.task != "regression" && m.task != "raw")
    throw ManifestError("unknown task '" + m.task + "'; expected classification, regression or raw");

  const json::Value* axis = root.find("sample_axis");
  if (!axis || axis->is_null()) {
    m.vectorized = false;
  } else if (axis->kind == json::Value::Kind::Number && axis->is_integer && axis->number == 0) {
    m.vectorized = true;
  } else {
    throw ManifestError("manifest.sample_axis must be 0 or null");
  }

  const auto& inputs = require_list(root, "inputs");
  for (size_t i = 0; i < inputs.size(); ++i)
    m.inputs.push_back(parse_tensor(inputs[i], "manifest.inputs[" + std::to_string(i) + "]"));
  const auto& outputs = require_list(root, "outputs");
  for (size_t i = 0; i < outputs.size(); ++i)
    m.outputs.push_back(parse_tensor(outputs[i], "manifest.outputs[" + std::to_string(i) + "]"));
  if (m.outputs.empty()) throw ManifestError("manifest.outputs is empty");

  // The symbolic dims the inputs name: the only ones a noise dim may follow (dims.md item 1).
  std::set<std::string> input_dims;
  for (const TensorSpec& t : m.inputs)
    for (const Dim& d : t.shape)
      if (!d.is_static()) input_dims.insert(d.symbol);
  std::string input_dims_text;
  for (const std::string& d : input_dims) input_dims_text += (input_dims_text.empty() ? "'" : ", '") + d + "'";
  if (input_dims_text.empty()) input_dims_text = "the inputs have none";

  const auto& noise = require_list(root, "noise");
  for (size_t i = 0; i < noise.size(); ++i) {
    std::string where = "manifest.noise[" + std::to_string(i) + "]";
    if (noise[i].kind != json::Value::Kind::Object) throw ManifestError(where + ": expected an object");
    NoiseSpec n;
    n.name = require_string(noise[i], "name", where);
    n.parameter = require_string(noise[i], "parameter", where);
    n.shape = parse_shape(noise[i], where);
    std::string dist = optional_string(noise[i], "distribution", "standard_normal", where);
    if (dist != "standard_normal")
      throw ManifestError(where + ": unsupported noise distribution '" + dist + "' (expected standard_normal)");
    // v2 fields a runtime may ignore: what the noise replaces and the transform the graph applies.
    n.kind = optional_string(noise[i], "kind", "weight", where);
    n.transform = optional_string(noise[i], "transform", "affine", where);
    if (m.vectorized && (n.shape.empty() || n.shape[0].symbol != kSampleDim))
      throw ManifestError(where + ": a vectorized graph needs noise shape ['samples', ...], got " + dims_str(n.shape));
    for (size_t d = m.vectorized ? 1 : 0; d < n.shape.size(); ++d) {
      const Dim& dim = n.shape[d];
      if (dim.is_static()) continue;
      if (dim.multiple == 0 || !input_dims.count(dim.name))
        throw ManifestError(where + ": noise dim '" + dim.symbol + "' in " + dims_str(n.shape) +
                            " is not allowed; after the sample axis a noise dim is an integer, '<name>' or "
                            "'<k>*<name>' with <name> a symbolic dim of an input (" + input_dims_text + ")");
    }
    m.noise.push_back(n);
  }
  return m;
}

}  // namespace illia
