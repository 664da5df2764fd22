// Launches mamba_ssm's selective-scan CUDA kernels (the reference beside ours in
// `python -m benchmarks.selective_scan --official DIR`), for timing and checking only.
//
// This file is ours; the kernels are not: it is compiled against the headers of mamba_ssm's
// csrc/selective_scan (Copyright 2023 Tri Dao, Albert Gu; Apache License 2.0), which
// scripts/official_ss_package.sh puts under .device/ (git-ignored, never committed) and builds
// this file against. No torch extension: a plain shared library with a C interface that takes
// device pointers and a stream (ctypes, benchmarks/official_selective_scan.py), so it links no
// torch symbol and runs beside any torch build of the same CUDA major version.
//
// What it instantiates: the bf16 input / fp32 weight kernels at 128 threads x 16 items (what
// mamba_ssm launches for seqlen > 1024), variable B and C with one group, no z, the even- and
// odd-length variants; the backward with and without the softplus of delta. Layouts are
// mamba_ssm's, contiguous: u, delta, out, dout, du, ddelta (batch, dim, seqlen); B, C and their
// fp32 gradients (batch, 1, dstate, seqlen); A, dA (dim, dstate); D, dD, delta_bias,
// ddelta_bias (dim); the forward's chunk states x (batch, dim, n_chunks, 2 * dstate) fp32,
// n_chunks = ceil(seqlen / 2048). dA, dB, dC, dD and ddelta_bias are accumulated atomically:
// the caller zeroes them, as mamba_ssm's own op does.
#include <cstring>

#include "selective_scan_fwd_kernel.cuh"
#include "selective_scan_bwd_kernel.cuh"

namespace {

constexpr int kThreads = 128;
constexpr int kItems = 16;
using input_t = c10::BFloat16;
using weight_t = float;

void fill_base(SSMParamsBase &p, int batch, int dim, int seqlen, int dstate, const void *u,
               const void *delta, const void *A, const void *B, const void *C, const void *D,
               const void *delta_bias, void *out, void *x, bool softplus) {
  p.batch = batch;
  p.dim = dim;
  p.seqlen = seqlen;
  p.dstate = dstate;
  p.n_groups = 1;
  p.n_chunks = (seqlen + 2047) / 2048;
  p.dim_ngroups_ratio = dim;
  p.is_variable_B = true;
  p.is_variable_C = true;
  p.delta_softplus = softplus;
  const SSMParamsBase::index_t row = seqlen, plane = (SSMParamsBase::index_t)dim * seqlen,
                               bc = (SSMParamsBase::index_t)dstate * seqlen;
  p.A_d_stride = dstate;
  p.A_dstate_stride = 1;
  p.B_batch_stride = p.C_batch_stride = bc;
  p.B_group_stride = p.C_group_stride = bc;
  p.B_dstate_stride = p.C_dstate_stride = row;
  p.u_batch_stride = p.delta_batch_stride = p.out_batch_stride = plane;
  p.u_d_stride = p.delta_d_stride = p.out_d_stride = row;
  p.A_ptr = const_cast<void *>(A);
  p.B_ptr = const_cast<void *>(B);
  p.C_ptr = const_cast<void *>(C);
  p.D_ptr = const_cast<void *>(D);
  p.u_ptr = const_cast<void *>(u);
  p.delta_ptr = const_cast<void *>(delta);
  p.delta_bias_ptr = const_cast<void *>(delta_bias);
  p.out_ptr = out;
  p.x_ptr = x;
  p.z_ptr = nullptr;
  p.out_z_ptr = nullptr;
}

template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, int bytes) {
  if (bytes < 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

template <bool kEven>
cudaError_t fwd(SSMParamsBase &p, cudaStream_t stream) {
  using K = Selective_Scan_fwd_kernel_traits<kThreads, kItems, 1, kEven, true, true, false, input_t, weight_t>;
  constexpr int smem = K::kSmemSize + MAX_DSTATE * sizeof(typename K::scan_t);
  auto kernel = &selective_scan_fwd_kernel<K>;
  cudaError_t err = allow_smem(kernel, smem);
  if (err != cudaSuccess) return err;
  kernel<<<dim3(p.batch, p.dim), K::kNThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <bool kEven, bool kSoftplus>
cudaError_t bwd(SSMParamsBwd &p, cudaStream_t stream) {
  using K = Selective_Scan_bwd_kernel_traits<kThreads, kItems, kEven, true, true, kSoftplus, false, input_t, weight_t>;
  constexpr int smem = K::kSmemSize + MAX_DSTATE * sizeof(typename K::scan_t) +
                       (kThreads + 4 * MAX_DSTATE) * sizeof(weight_t);
  auto kernel = &selective_scan_bwd_kernel<K>;
  cudaError_t err = allow_smem(kernel, smem);
  if (err != cudaSuccess) return err;
  kernel<<<dim3(p.batch, p.dim), K::kNThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

extern "C" {

// 0 on success, else a cudaError_t (hades_official_ss_error names it); -1: bad sizes.
int hades_official_ss_fwd(int batch, int dim, int seqlen, int dstate, const void *u, const void *delta,
                          const void *A, const void *B, const void *C, const void *D,
                          const void *delta_bias, int softplus, void *out, void *x, void *stream) {
  if (batch < 1 || dim < 1 || seqlen < 1 || dstate < 1 || dstate > MAX_DSTATE) return -1;
  SSMParamsBase p;
  std::memset(&p, 0, sizeof(p));
  fill_base(p, batch, dim, seqlen, dstate, u, delta, A, B, C, D, delta_bias, out, x, softplus != 0);
  auto s = static_cast<cudaStream_t>(stream);
  return seqlen % (kThreads * kItems) == 0 ? fwd<true>(p, s) : fwd<false>(p, s);
}

int hades_official_ss_bwd(int batch, int dim, int seqlen, int dstate, const void *u, const void *delta,
                          const void *A, const void *B, const void *C, const void *D,
                          const void *delta_bias, int softplus, const void *x, const void *dout,
                          void *du, void *ddelta, void *dA, void *dB, void *dC, void *dD,
                          void *ddelta_bias, void *stream) {
  if (batch < 1 || dim < 1 || seqlen < 1 || dstate < 1 || dstate > MAX_DSTATE) return -1;
  SSMParamsBwd p;
  std::memset(&p, 0, sizeof(p));
  // without z the forward's output is not read: mamba_ssm passes dout in its place
  fill_base(p, batch, dim, seqlen, dstate, u, delta, A, B, C, D, delta_bias, const_cast<void *>(dout),
            const_cast<void *>(x), softplus != 0);
  const SSMParamsBase::index_t row = seqlen, plane = (SSMParamsBase::index_t)dim * seqlen,
                               bc = (SSMParamsBase::index_t)dstate * seqlen;
  p.dout_batch_stride = p.du_batch_stride = p.ddelta_batch_stride = plane;
  p.dout_d_stride = p.du_d_stride = p.ddelta_d_stride = row;
  p.dA_d_stride = dstate;
  p.dA_dstate_stride = 1;
  p.dB_batch_stride = p.dC_batch_stride = bc;
  p.dB_group_stride = p.dC_group_stride = bc;
  p.dB_dstate_stride = p.dC_dstate_stride = row;
  p.dout_ptr = const_cast<void *>(dout);
  p.du_ptr = du;
  p.ddelta_ptr = ddelta;
  p.dA_ptr = dA;
  p.dB_ptr = dB;
  p.dC_ptr = dC;
  p.dD_ptr = dD;
  p.ddelta_bias_ptr = ddelta_bias;
  p.dz_ptr = nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const bool even = seqlen % (kThreads * kItems) == 0;
  if (softplus) return even ? bwd<true, true>(p, s) : bwd<false, true>(p, s);
  return even ? bwd<true, false>(p, s) : bwd<false, false>(p, s);
}

const char *hades_official_ss_error(int code) {
  return code == -1 ? "bad sizes" : cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // extern "C"
