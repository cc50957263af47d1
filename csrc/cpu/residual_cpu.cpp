// CPU kernel of dal::residual_score: |x - phi| in the eroded mask (dal/residual.h,
// morphology_cpu.h), then its median (median_cpu.h), in one op.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>

#include "../common.h"
#include "dal/residual.h"
#include "median_cpu.h"
#include "morphology_cpu.h"

namespace dal {
namespace {

at::Tensor residual_score_cpu(const at::Tensor& x_in, const at::Tensor& phi_in,
                              const std::optional<at::Tensor>& mask_in, int64_t kernel_size, int64_t erode) {
  check_residual_args(x_in, phi_in, mask_in, kernel_size, erode);
  const at::Tensor x = x_in.contiguous(), phi = phi_in.contiguous();
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  const at::Tensor inside = eroded_mask_bytes(mask_in, erode, x.sizes(), erode_cpu);
  at::Tensor residual;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "residual_score_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* ps = phi.const_data_ptr<scalar_t>();
    const uint8_t* ms = inside.defined() ? inside.const_data_ptr<uint8_t>() : nullptr;
    // The masked residual once, in the compute precision: the median reads each voxel about
    // six times (kz depths, and the rows a task shares with its neighbours), so forming it in
    // the median's load costs more than one pass that writes it.
    residual = at::empty(x.sizes(), x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    acc_t* r = residual.mutable_data_ptr<acc_t>();
    at::parallel_for(0, x.numel(), 1 << 14, [=](int64_t begin, int64_t end) {
      if (ms != nullptr) {
        for (int64_t i = begin; i < end; ++i) {
          r[i] = residual::masked_residual(static_cast<acc_t>(xs[i]), static_cast<acc_t>(ps[i]), ms[i] != 0);
        }
      } else {
        for (int64_t i = begin; i < end; ++i) {
          r[i] = residual::masked_residual(static_cast<acc_t>(xs[i]), static_cast<acc_t>(ps[i]), true);
        }
      }
    });
  });
  median_cpu(residual, out, geometry_of(x), static_cast<int32_t>(kernel_size));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dal, CPU, m) { m.impl("residual_score", &residual_score_cpu); }

}  // namespace dal
