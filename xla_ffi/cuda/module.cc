// Python extension `_jbs_cuda`: hands the CUDA FFI handlers to jax.ffi.register_ffi_target.

#include <cuda_runtime_api.h>
#include <nanobind/nanobind.h>

#include <type_traits>

#include "blocksparse_cuda_ffi.h"
#include "launch_util.h"

namespace nb = nanobind;

namespace {

template <typename Handler>
nb::capsule HandlerCapsule(Handler* handler) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, Handler, XLA_FFI_CallFrame*>,
                "FFI handlers take an XLA_FFI_CallFrame*");
  return nb::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace

NB_MODULE(_jbs_cuda, m) {
  m.def(
      "registrations",
      []() {
        nb::dict targets;
        targets["jbs_bsmm"] = HandlerCapsule(JbsBsmmCuda);
        targets["jbs_bsmm_at"] = HandlerCapsule(JbsBsmmAtCuda);
        targets["jbs_sampled"] = HandlerCapsule(JbsSampledCuda);
        targets["jbs_conv"] = HandlerCapsule(JbsConvCuda);
        targets["jbs_conv_dw_halo"] = HandlerCapsule(JbsConvDwHaloCuda);
        return targets;
      },
      "FFI target name -> handler capsule, for platform 'CUDA'.");
  m.def(
      "wgmma_available", []() { return jbs::WgmmaAvailable(); },
      "Whether the current device runs the sm_90a kernels (wgmma, TMA) of this build: what "
      "jbs_bsmm_at needs.");
  m.def(
      "cuda_runtime_version",
      []() {
        // Reports the runtime actually loaded (equal to the build version with static cudart),
        // or 0 if the runtime cannot be queried.
        int version = 0;
        if (cudaRuntimeGetVersion(&version) != cudaSuccess) return 0;
        return version;
      },
      "CUDA runtime version as an int, e.g. 13000 for 13.0.");
}
