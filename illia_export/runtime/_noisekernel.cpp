// Python extension `illia_export.runtime._noisekernel` (built by setup.py with the package): the
// threads and the CPython bindings around the one compiled noise kernel, illia/noise_core.h
// (runtimes/cpp/include/), which the C++ runtime includes too. docs/noise.md is normative; the
// numpy references are `illia_export.runtime.noise.standard_normal_v2` / `_v1`.
//
// Threads split the element range; an element's value never depends on the split
// (counter-based) nor on the code path (no FMA contraction, setup.py), which the tests check.
//
// Optionally the kernel writes `mu + sigma * value` instead of `value`: the sampled weight
// itself, so that a weight-fed graph reads memory once.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "illia/noise_core.h"

namespace {

using illia::core::Job;
using illia::core::run_range;

// Smallest share of elements worth a thread of its own.
constexpr int64_t kMinShare = 1 << 16;

void run_job(const Job& job, int64_t total, int threads) {
  int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, total / kMinShare));
  if (workers <= 1) {
    run_range(job, 0, total);
    return;
  }
  // contiguous, 64-element aligned shares (each element's value does not depend on the split)
  const int64_t share = ((total + workers - 1) / workers + 63) & ~int64_t(63);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int64_t w = 1; w < workers; ++w) {
    const int64_t b = w * share, e = std::min(total, (w + 1) * share);
    if (b < e) pool.emplace_back(run_range, std::cref(job), b, e);
  }
  run_range(job, 0, std::min(total, share));
  for (auto& t : pool) t.join();
}

// fill_vN(key, n, sample_start, num_samples, out_addr, mu_addr, sigma_addr, threads)
PyObject* fill(int version, PyObject* args) {
  int threads;
  unsigned long long key, out_addr, mu_addr, sigma_addr;
  long long n, sample_start, num_samples;
  if (!PyArg_ParseTuple(args, "KLLLKKKi", &key, &n, &sample_start, &num_samples, &out_addr, &mu_addr,
                        &sigma_addr, &threads))
    return nullptr;
  if (n < 0 || sample_start < 0 || num_samples < 0 || out_addr == 0 || ((mu_addr == 0) != (sigma_addr == 0))) {
    PyErr_SetString(PyExc_ValueError, "invalid sizes or buffer addresses");
    return nullptr;
  }
  Job job{version,
          static_cast<uint64_t>(key),
          static_cast<int64_t>(n),
          static_cast<int64_t>(sample_start),
          reinterpret_cast<float*>(static_cast<uintptr_t>(out_addr)),
          reinterpret_cast<const float*>(static_cast<uintptr_t>(mu_addr)),
          reinterpret_cast<const float*>(static_cast<uintptr_t>(sigma_addr))};
  const int64_t total = static_cast<int64_t>(n) * static_cast<int64_t>(num_samples);
  if (total > 0) {
    Py_BEGIN_ALLOW_THREADS run_job(job, total, std::max(1, threads));
    Py_END_ALLOW_THREADS
  }
  Py_RETURN_NONE;
}

PyObject* py_fill_v1(PyObject*, PyObject* args) { return fill(1, args); }
PyObject* py_fill_v2(PyObject*, PyObject* args) { return fill(2, args); }

PyMethodDef kMethods[] = {
    {"fill_v1", py_fill_v1, METH_VARARGS,
     "fill_v1(key, n, sample_start, num_samples, out_addr, mu_addr, sigma_addr, threads): as fill_v2, for "
     "illia-noise-v1."},
    {"fill_v2", py_fill_v2, METH_VARARGS,
     "fill_v2(key, n, sample_start, num_samples, out_addr, mu_addr, sigma_addr, threads): write "
     "samples [sample_start, sample_start + num_samples) of one illia-noise-v2 stream (n elements each, float32) at "
     "out_addr, or mu + sigma * noise when mu_addr/sigma_addr are non-zero."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_noisekernel",
                       "Compiled illia-noise-v1/v2 generators (see illia_export.runtime.noise).", -1, kMethods};

}  // namespace

PyMODINIT_FUNC PyInit__noisekernel(void) { return PyModule_Create(&kModule); }
