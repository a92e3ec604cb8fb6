// illia-mc: Monte Carlo prediction from an illia-export artifact on the command line.
//
//   illia-mc ARTIFACT --input x.npy [--input y.npy ...] --samples N --seed S
//            [--strategy fresh|bank] [--chunk-size N] [--row-ids ids.npy] [--repeat N]
//            [--allow-nonfinite] [--no-digest-check] --out DIR
//
// Writes, for the first output, DIR/mean.npy and DIR/std.npy (over the raw output: logits for
// classifiers), and for classifiers also probabilities.npy (mean softmax), entropy.npy
// (predictive entropy), expected_entropy.npy and mutual_information.npy. Further outputs go
// to mean_<name>.npy / std_<name>.npy.
// --repeat N runs the prediction N times (same seed: same results) and reports the fastest and
// the mean time, for benchmarks.
//
// The same input rules as the Python runtime: NaN/inf inputs refused (unless
// --allow-nonfinite), the artifact's digest checked (--no-digest-check to skip, explicitly),
// .npy headers bounded before allocating, memory sized before allocating. It never replaces a
// file in --out that it did not write: it keeps a list of what it wrote in DIR/.illia-mc
// (name, size, modification time) and refuses a run that would replace any other file.
//
// Exit status: 0 done; 2 the invocation or its inputs are refused (usage, .npy files, shapes,
// values, row ids, memory, --out); 1 the artifact cannot be used (missing, corrupt, digest
// mismatch, manifest) or the run failed. Errors are one line on stderr: "illia-mc: error: ...".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <new>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <unistd.h>
#include <vector>

#include "illia/error.h"
#include "illia/npy.h"
#include "illia/predictor.h"

namespace fs = std::filesystem;

namespace {

const char kUsage[] =
    "usage: illia-mc ARTIFACT --input x.npy [--input ...] --samples N --seed S\n"
    "                [--strategy fresh|bank] [--chunk-size N] [--row-ids ids.npy] [--repeat N]\n"
    "                [--allow-nonfinite] [--no-digest-check] --out DIR\n";

/// Exit status 2: the invocation or its inputs are refused.
constexpr int kUserError = 2;
/// Exit status 1: the artifact cannot be used, or the run failed.
constexpr int kArtifactError = 1;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// --out would replace a file illia-mc did not write (exit 2).
struct OutputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int64_t parse_int(const std::string& flag, const std::string& text, int64_t min) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || v < min)
    throw UsageError(flag + " needs an integer >= " + std::to_string(min) + " (at most 2^63 - 1), got '" + text + "'");
  return v;
}

struct Args {
  std::string artifact;
  std::vector<std::string> inputs;
  std::string out;
  std::string row_ids;
  illia::PredictOptions options;
  illia::LoadOptions load;
  int64_t repeat = 1;
  bool have_samples = false, have_seed = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (flag.rfind("--", 0) != 0) {
      if (!a.artifact.empty()) throw UsageError("unexpected argument '" + flag + "'");
      a.artifact = flag;
      continue;
    }
    if (flag == "--allow-nonfinite") {
      a.options.allow_nonfinite = true;
      continue;
    }
    if (flag == "--no-digest-check") {
      a.load.check_digest = false;
      continue;
    }
    if (i + 1 >= argc) throw UsageError(flag + " needs a value");
    std::string value = argv[++i];
    if (flag == "--input") {
      a.inputs.push_back(value);
    } else if (flag == "--samples") {
      a.options.num_samples = parse_int(flag, value, 1);
      a.have_samples = true;
    } else if (flag == "--seed") {
      a.options.seed = static_cast<uint64_t>(parse_int(flag, value, 0));
      a.have_seed = true;
    } else if (flag == "--strategy") {
      if (value == "fresh") a.options.strategy = illia::Strategy::Fresh;
      else if (value == "bank") a.options.strategy = illia::Strategy::Bank;
      else throw UsageError("--strategy must be fresh or bank, got '" + value + "'");
    } else if (flag == "--chunk-size") {
      a.options.chunk_size = parse_int(flag, value, 0);
    } else if (flag == "--row-ids") {
      a.row_ids = value;
    } else if (flag == "--repeat") {
      a.repeat = parse_int(flag, value, 1);
    } else if (flag == "--out") {
      a.out = value;
    } else {
      throw UsageError("unknown option " + flag);
    }
  }
  if (a.artifact.empty()) throw UsageError("missing ARTIFACT");
  if (a.inputs.empty()) throw UsageError("missing --input");
  if (!a.have_samples) throw UsageError("missing --samples");
  if (!a.have_seed) throw UsageError("missing --seed");
  if (a.out.empty()) throw UsageError("missing --out");
  return a;
}

// ------------------------------------------------------------------------------ --out folder
// What illia-mc wrote into a folder: DIR/.illia-mc, one line per file: "size mtime name".
// A file may be replaced only when it is listed with its current size and mtime (ours,
// unchanged since); anything else is the user's and is never replaced.
constexpr const char* kLedger = ".illia-mc";

struct Stamp {
  uintmax_t size = 0;
  long long mtime = 0;
  bool operator==(const Stamp& o) const { return size == o.size && mtime == o.mtime; }
};

Stamp stamp_of(const fs::path& p) {
  return Stamp{fs::file_size(p), static_cast<long long>(fs::last_write_time(p).time_since_epoch().count())};
}

std::map<std::string, Stamp> read_ledger(const fs::path& dir) {
  std::map<std::string, Stamp> ledger;
  std::ifstream in(dir / kLedger);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    Stamp s;
    std::string name;
    if (ss >> s.size >> s.mtime && std::getline(ss >> std::ws, name) && !name.empty()) ledger[name] = s;
  }
  return ledger;
}

void write_ledger(const fs::path& dir, const std::map<std::string, Stamp>& ledger) {
  const fs::path tmp = dir / (std::string(kLedger) + ".tmp-" + std::to_string(getpid()));
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [name, s] : ledger) out << s.size << ' ' << s.mtime << ' ' << name << '\n';
    if (!out) throw illia::Error("cannot write " + tmp.string());
  }
  fs::rename(tmp, dir / kLedger);
}

/// The files a prediction of this artifact writes (first output's summaries, mean_/std_ of the
/// others). Output names become file names, so a name that could leave the folder is refused.
std::vector<std::string> output_files(const illia::Manifest& m) {
  std::vector<std::string> files = {"mean.npy", "std.npy"};
  if (m.task == "classification")
    for (const char* f : {"probabilities.npy", "entropy.npy", "expected_entropy.npy", "mutual_information.npy"})
      files.emplace_back(f);
  for (size_t o = 1; o < m.outputs.size(); ++o) {
    const std::string& name = m.outputs[o].name;
    if (name.empty() || name.find_first_of("/\\") != std::string::npos || name[0] == '.')
      throw illia::ManifestError("output name '" + name + "' cannot be a file name part (it holds '/', '\\' or starts "
                                 "with '.')");
    files.push_back("mean_" + name + ".npy");
    files.push_back("std_" + name + ".npy");
  }
  return files;
}

/// Check that none of `files` would replace a file illia-mc did not write in `dir`, and (with
/// `create`) make the folder. Called before the run (nothing created, so a refused input leaves
/// no folder behind) and again right before writing.
std::map<std::string, Stamp> claim_out_dir(const fs::path& dir, const std::vector<std::string>& files, bool create) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw OutputError("--out " + dir.string() + " exists and is not a folder; give a folder");
  if (!create && !fs::exists(dir, ec)) return {};
  fs::create_directories(dir, ec);
  if (ec) throw OutputError("cannot create output folder " + dir.string() + ": " + ec.message());
  std::map<std::string, Stamp> ledger = read_ledger(dir);
  for (const std::string& f : files) {
    const fs::path p = dir / f;
    if (!fs::exists(fs::symlink_status(p, ec))) continue;
    auto it = ledger.find(f);
    if (!fs::is_regular_file(fs::symlink_status(p, ec)) || it == ledger.end() || !(it->second == stamp_of(p)))
      throw OutputError(p.string() + " exists and was not written by illia-mc (or was changed since); illia-mc "
                        "never replaces it: choose another --out folder, or move the file away");
  }
  return ledger;
}

/// Write `array` to dir/name through a temporary file renamed into place.
void write_output(const fs::path& dir, const std::string& name, const illia::Array& array,
                  std::map<std::string, Stamp>* ledger) {
  const fs::path tmp = dir / ("." + name + ".illia-mc-tmp-" + std::to_string(getpid()));
  try {
    illia::write_npy(tmp.string(), array);
    fs::rename(tmp, dir / name);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  (*ledger)[name] = stamp_of(dir / name);
}

illia::Array read_row_ids(const std::string& path) {
  illia::Array ids = illia::read_npy(path);
  if (ids.dtype != illia::DType::Int64 || ids.shape.size() != 1)
    throw illia::InputError("--row-ids " + path + " must hold a 1-D integer array (one id per row), got " +
                            illia::dtype_name(ids.dtype) + " " + illia::shape_str(ids.shape));
  return ids;
}

int fail(int status, const std::string& message) {
  std::cerr << "illia-mc: error: " << message << "\n";
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "illia-mc: error: " << e.what() << "\n" << kUsage;
    return kUserError;
  }
  try {
    illia::Predictor predictor = illia::Predictor::load(args.artifact, args.load);
    std::vector<illia::Array> inputs;
    for (const std::string& path : args.inputs) inputs.push_back(illia::read_npy(path));
    if (!args.row_ids.empty()) args.options.row_ids = read_row_ids(args.row_ids).i64;
    const fs::path out_dir(args.out);
    const std::vector<std::string> files = output_files(predictor.manifest());
    claim_out_dir(out_dir, files, /*create=*/false);  // fail before the run, create nothing yet

    illia::Prediction prediction;
    double best_ms = 0.0, total_ms = 0.0;
    for (int64_t r = 0; r < args.repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      prediction = predictor.predict(inputs, args.options);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      best_ms = r == 0 ? ms : std::min(best_ms, ms);
      total_ms += ms;
    }

    std::map<std::string, Stamp> ledger = claim_out_dir(out_dir, files, /*create=*/true);
    for (size_t o = 0; o < prediction.outputs.size(); ++o) {
      const illia::OutputSummary& s = prediction.outputs[o];
      const std::string suffix = o == 0 ? "" : "_" + s.name;
      write_output(out_dir, "mean" + suffix + ".npy", s.mean, &ledger);
      write_output(out_dir, "std" + suffix + ".npy", s.std, &ledger);
      if (s.is_classification()) {
        write_output(out_dir, "probabilities" + suffix + ".npy", s.probabilities, &ledger);
        write_output(out_dir, "entropy" + suffix + ".npy", s.entropy, &ledger);
        write_output(out_dir, "expected_entropy" + suffix + ".npy", s.expected_entropy, &ledger);
        write_output(out_dir, "mutual_information" + suffix + ".npy", s.mutual_information, &ledger);
      }
    }
    write_ledger(out_dir, ledger);
    const illia::OutputSummary& first = prediction.outputs[0];
    std::printf("illia-mc: %lld samples (%s), output '%s' %s, %.1f ms (best of %lld; mean %.1f ms) -> %s\n",
                static_cast<long long>(args.options.num_samples),
                predictor.manifest().vectorized ? "vectorized" : "per-call", first.name.c_str(),
                illia::shape_str(first.mean.shape).c_str(), best_ms, static_cast<long long>(args.repeat),
                total_ms / static_cast<double>(args.repeat), args.out.c_str());
  } catch (const illia::NpyError& e) {
    return fail(kUserError, e.what());
  } catch (const illia::ShapeError& e) {
    return fail(kUserError, e.what());
  } catch (const illia::InputError& e) {
    return fail(kUserError, e.what());
  } catch (const illia::ResourceError& e) {
    return fail(kUserError, e.what());
  } catch (const OutputError& e) {
    return fail(kUserError, e.what());
  } catch (const std::bad_alloc&) {
    return fail(kArtifactError, "out of memory (the estimate before the run passed; lower --samples or --chunk-size)");
  } catch (const std::exception& e) {
    return fail(kArtifactError, e.what());
  }
  return 0;
}
