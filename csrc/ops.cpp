// The schema of every dal op, in one place. Kernels register beside it per device in
// csrc/cpu/*.cpp and csrc/cuda/*.cu; fake (meta) kernels and autograd live in python/dal/ops.
#include <Python.h>
#include <torch/library.h>

// Importing dal._C loads this library and with it the registrations below.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
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
