#include "illia/manifest.h"
#include "illia/noise.h"

#include "illia/error.h"
#include "illia/json.h"

namespace illia {

std::vector<int64_t> NoiseSpec::event_shape() const {
  std::vector<int64_t> out;
  for (const Dim& d : shape)
    if (d.is_static()) out.push_back(d.value);
  return out;
}

int64_t NoiseSpec::event_numel() const {
  int64_t n = 1;
  for (int64_t d : event_shape()) n *= d;
  return n;
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
  m.contract = static_cast<int>(contract.number);
  if (m.contract != kContractVersion)
    throw ManifestError("manifest contract version " + std::to_string(m.contract) +
                        " is not supported (this runtime reads version " + std::to_string(kContractVersion) + ")");
  m.format = require_string(root, "format", "manifest");
  m.source = optional_string(root, "source", "", "manifest");
  m.task = optional_string(root, "task", "raw", "manifest");
  m.noise_generator = optional_string(root, "noise_generator", "illia-noise-v1", "manifest");
  parse_generator(m.noise_generator);  // throws ManifestError for a generator this runtime lacks
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
    if (m.vectorized && (n.shape.empty() || n.shape[0].symbol != "samples"))
      throw ManifestError(where + ": a vectorized graph needs noise shape ['samples', ...], got " + dims_str(n.shape));
    for (size_t d = m.vectorized ? 1 : 0; d < n.shape.size(); ++d)
      if (!n.shape[d].is_static())
        throw ManifestError(where + ": noise dims after the sample axis must be integers, got " + dims_str(n.shape));
    m.noise.push_back(n);
  }
  return m;
}

}  // namespace illia
