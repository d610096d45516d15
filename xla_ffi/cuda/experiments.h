// Kernel variants still being measured are compiled into every build and stay off unless named
// in JBS_CUDA_EXPERIMENT (a comma-separated list, read once per process), so that one build can
// time them against the defaults (benchmarks/gpu_run.sh ab).
#ifndef JAX_BLOCKSPARSE_XLA_FFI_CUDA_EXPERIMENTS_H_
#define JAX_BLOCKSPARSE_XLA_FFI_CUDA_EXPERIMENTS_H_

#include <string_view>

namespace jbs {

// Allocates nothing: it runs on every launch. Defined in bsmm_tensor_core.cu.
bool ExperimentEnabled(std::string_view name);

}  // namespace jbs

#endif  // JAX_BLOCKSPARSE_XLA_FFI_CUDA_EXPERIMENTS_H_
