// Python entry point: exposes the CPU handler capsules for jax.ffi.register_ffi_target.
#include <nanobind/nanobind.h>

#include "xla_ffi/cpu/blocksparse_cpu_ffi.h"

namespace nb = nanobind;

namespace {

// jax.ffi.register_ffi_target takes a PyCapsule wrapping the XLA_FFI_Handler* symbol.
template <typename Handler>
nb::capsule HandlerCapsule(Handler* handler) {
  return nb::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace

NB_MODULE(_jbs_cpu, m) {
  m.doc() = "CPU XLA FFI handlers for jax_blocksparse";
  m.def(
      "registrations",
      []() {
        nb::dict targets;
        targets["jbs_bsmm"] = HandlerCapsule(JbsBsmmCpu);
        targets["jbs_sampled"] = HandlerCapsule(JbsSampledCpu);
        targets["jbs_conv"] = HandlerCapsule(JbsConvCpu);
        targets["jbs_conv_dw"] = HandlerCapsule(JbsConvDwCpu);
        return targets;
      },
      "Maps each FFI target name to its CPU handler capsule.");
}
