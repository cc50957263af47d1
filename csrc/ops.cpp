// The schema of every dal op, in one place. Kernels register beside it per device in
// csrc/cpu/*.cpp and csrc/cuda/*.cu; fake (meta) kernels and autograd live in python/dal/ops.
#include <Python.h>
#include <torch/library.h>

#include "common.h"

// Importing dal._C loads this library and with it the registrations below. SOBEL_CPU_KERNEL says
// which CPU kernel the float32 Sobel magnitude runs on this machine.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && PyModule_AddStringConstant(module, "SOBEL_CPU_KERNEL", dal::sobel_cpu_kernel()) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}

TORCH_LIBRARY(dal, m) {
  m.def("onehot_st(Tensor logits, float tau, Tensor? noise, int dim) -> Tensor");
  m.def("onehot_st_backward(Tensor grad, Tensor logits, float tau, Tensor? noise, int dim) -> Tensor");
  m.def("sobel(Tensor x, bool magnitude, bool normalized) -> Tensor");
  m.def("sobel_backward(Tensor grad, Tensor x, bool magnitude, bool normalized) -> Tensor");
  m.def("median_filter(Tensor x, int kernel_size) -> Tensor");
  m.def("residual_score(Tensor x, Tensor phi, Tensor? mask, int kernel_size, int erode) -> Tensor");
  m.def("binary_erode(Tensor mask, int radius) -> Tensor");
  m.def("binary_dilate(Tensor mask, int radius) -> Tensor");
  m.def("canny(Tensor x, float low, float high, float sigma, bool hysteresis, bool use_quantiles) -> Tensor");
}
