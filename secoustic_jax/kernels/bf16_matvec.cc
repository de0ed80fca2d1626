// y[M, N] = x[M, K] @ float32(w[K, N]) for bfloat16 weights with float32 accumulation: an
// XLA FFI custom call for the streaming steps on CPU, which read every transformer weight
// once per token. XLA:CPU's own bf16 dot at M = 1 runs ~10x slower than its float32 dot;
// this kernel reads half the bytes of the float32 dot.
//
// Two paths, chosen by M (measured on a 2-core Zen 4 VM, bench/NOTES.md section 5):
// - M = 1 (one stream): one weight row at a time, so the whole matrix is read as one
//   sequential stream, on the calling thread: 24.6 GB/s. Four rows per pass (four streams
//   a page apart) ran at 13.6 GB/s, and a second thread added < 10 % in the real step.
// - M >= 2 (a batch of streams): 64-column register tiles (up to 4 rows x 4 zmm
//   accumulators over the whole k loop) spread over the caller and one pool thread. At
//   M = 16 this is FMA-bound: 160 GFLOP/s on 2 cores against 138 for XLA's float32 dot
//   of the same product, where the row-at-a-time path re-reads each row M times (3x slower).
// Both paths give bit-identical rows (bf16_common.h: same k order, one fma per term).

#include "bf16_common.h"

namespace secoustic {
namespace {

// o[n] = fma(a, float32(w[n]), o[n]) for n < N.
void Axpy(float* o, const uint16_t* w, float a, int64_t N) {
  int64_t n = 0;
#if defined(__AVX512F__)
  const __m512 b = _mm512_set1_ps(a);
  for (; n + 16 <= N; n += 16) {
    _mm512_storeu_ps(o + n, _mm512_fmadd_ps(b, Widen16(w + n), _mm512_loadu_ps(o + n)));
  }
#endif
  for (; n < N; ++n) o[n] = std::fma(a, Bf16ToF32(w[n]), o[n]);
}

ffi::Error Bf16MatvecImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::Buffer<ffi::BF16> w, ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 2 || yd.size() != 2 || xd[1] != wd[0] ||
      yd[0] != xd[0] || yd[1] != wd[1]) {
    return ffi::Error::InvalidArgument(
        "secoustic_bf16_matvec: expects x f32[M, K], w bf16[K, N] -> y f32[M, N]");
  }
  const int64_t M = xd[0], K = xd[1], N = wd[1];
  const float* xs = x.typed_data();
  const uint16_t* ws = reinterpret_cast<const uint16_t*>(w.untyped_data());
  float* out = y->typed_data();
  if (M == 1) {
    std::memset(out, 0, sizeof(float) * N);
    for (int64_t k = 0; k < K; ++k) Axpy(out, ws + k * N, xs[k], N);
    return ffi::Error::Success();
  }
  const int64_t tiles = (N + kTileCols - 1) / kTileCols;
  ParallelFor(pool, tiles, /*helpers=*/1, [&](int64_t t) {
    const int64_t n0 = t * kTileCols;
    ColumnBlock(xs, K, ws, N, out, N, M, K, n0, std::min(N, n0 + kTileCols));
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace secoustic

XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticBf16Matvec, secoustic::Bf16MatvecImpl,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::BF16>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>());
