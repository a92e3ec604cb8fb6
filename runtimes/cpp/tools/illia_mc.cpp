// illia-mc: Monte Carlo prediction from an illia-export artifact on the command line.
//
//   illia-mc ARTIFACT --input x.npy [--input y.npy ...] --samples N --seed S
//            [--strategy fresh|bank] [--chunk-size N] [--repeat N] --out DIR
//
// Writes, for the first output, DIR/mean.npy and DIR/std.npy (over the raw output: logits for
// classifiers), and for classifiers also probabilities.npy (mean softmax), entropy.npy
// (predictive entropy), expected_entropy.npy and mutual_information.npy. Further outputs go
// to mean_<name>.npy / std_<name>.npy.
// --repeat N runs the prediction N times (same seed: same results) and reports the fastest and
// the mean time, for benchmarks. Errors go to stderr with exit status 1 (2 for usage errors).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "illia/error.h"
#include "illia/npy.h"
#include "illia/predictor.h"

namespace {

const char kUsage[] =
    "usage: illia-mc ARTIFACT --input x.npy [--input ...] --samples N --seed S\n"
    "                [--strategy fresh|bank] [--chunk-size N] [--repeat N] --out DIR\n";

struct UsageError : std::runtime_error {
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
    throw UsageError(flag + " needs an integer >= " + std::to_string(min) + ", got '" + text + "'");
  return v;
}

struct Args {
  std::string artifact;
  std::vector<std::string> inputs;
  std::string out;
  illia::PredictOptions options;
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

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "illia-mc: error: " << e.what() << "\n" << kUsage;
    return 2;
  }
  try {
    illia::Predictor predictor = illia::Predictor::load(args.artifact);
    std::vector<illia::Array> inputs;
    for (const std::string& path : args.inputs) inputs.push_back(illia::read_npy(path));

    illia::Prediction prediction;
    double best_ms = 0.0, total_ms = 0.0;
    for (int64_t r = 0; r < args.repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      prediction = predictor.predict(inputs, args.options);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      best_ms = r == 0 ? ms : std::min(best_ms, ms);
      total_ms += ms;
    }

    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(args.out, ec);
    if (ec) throw illia::Error("cannot create output folder " + args.out + ": " + ec.message());
    for (size_t o = 0; o < prediction.outputs.size(); ++o) {
      const illia::OutputSummary& s = prediction.outputs[o];
      const std::string suffix = o == 0 ? "" : "_" + s.name;
      illia::write_npy((fs::path(args.out) / ("mean" + suffix + ".npy")).string(), s.mean);
      illia::write_npy((fs::path(args.out) / ("std" + suffix + ".npy")).string(), s.std);
      if (s.is_classification()) {
        illia::write_npy((fs::path(args.out) / ("probabilities" + suffix + ".npy")).string(), s.probabilities);
        illia::write_npy((fs::path(args.out) / ("entropy" + suffix + ".npy")).string(), s.entropy);
        illia::write_npy((fs::path(args.out) / ("expected_entropy" + suffix + ".npy")).string(), s.expected_entropy);
        illia::write_npy((fs::path(args.out) / ("mutual_information" + suffix + ".npy")).string(),
                         s.mutual_information);
      }
    }
    const illia::OutputSummary& first = prediction.outputs[0];
    std::printf("illia-mc: %lld samples (%s), output '%s' %s, %.1f ms (best of %lld; mean %.1f ms) -> %s\n",
                static_cast<long long>(args.options.num_samples),
                predictor.manifest().vectorized ? "vectorized" : "per-call", first.name.c_str(),
                illia::shape_str(first.mean.shape).c_str(), best_ms, static_cast<long long>(args.repeat),
                total_ms / static_cast<double>(args.repeat), args.out.c_str());
  } catch (const std::exception& e) {
    std::cerr << "illia-mc: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
