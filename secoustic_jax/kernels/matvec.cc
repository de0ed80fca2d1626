// y[M, N] = x[M, K] @ float32(w[K, N]) for bfloat16 weights, and (x @ float32(q)) * scale
// for int8 weights with per-column scales, with float32 accumulation: XLA FFI custom calls
// for the streaming steps on CPU, which read every transformer weight once per token.
// XLA:CPU's own bf16 dot at M = 1 runs ~10x slower than its float32 dot; these read a
// half (bf16) or a quarter (int8) of the float32 dot's bytes.
//
// Two paths, chosen by M (measured on a 2-core Zen 4 VM, bench/NOTES.md section 5):
// - M = 1 (one stream): one weight row at a time, so the whole matrix is read as one
//   sequential stream, on the calling thread: 24.6 GB/s. Four rows per pass (four streams
//   a page apart) ran at 13.6 GB/s, and a second thread added < 10 % in the real step.
// - M >= 2 (a batch of streams): 64-column register tiles (up to 4 rows x 4 zmm
//   accumulators over the whole k loop) spread over the caller and one pool thread. At
//   M = 16 this is FMA-bound: 160 GFLOP/s on 2 cores against 138 for XLA's float32 dot
//   of the same product, where the row-at-a-time path re-reads each row M times (3x slower).
// Both paths give bit-identical rows (common.h: same k order, one fma per term).

#include "common.h"

namespace secoustic {
namespace {

bool ShapesOk(const ffi::AnyBuffer::Dimensions xd, const ffi::AnyBuffer::Dimensions wd,
              const ffi::AnyBuffer::Dimensions yd) {
  return xd.size() == 2 && wd.size() == 2 && yd.size() == 2 && xd[1] == wd[0] &&
         yd[0] == xd[0] && yd[1] == wd[1];
}

// out[M, N] = x[M, K] @ float32(w[K, N]): the row stream at M = 1, tiles over threads above.
template <typename W>
void Matvec(ffi::ThreadPool& pool, const float* xs, const W* ws, float* out, int64_t M,
            int64_t K, int64_t N) {
  if (M == 1) {
    std::memset(out, 0, sizeof(float) * N);
    for (int64_t k = 0; k < K; ++k) Axpy(out, ws + k * N, xs[k], N);
    return;
  }
  const int64_t tiles = (N + kTileCols - 1) / kTileCols;
  ParallelFor(pool, tiles, /*helpers=*/1, [&](int64_t t) {
    const int64_t n0 = t * kTileCols;
    ColumnBlock(xs, K, ws, N, out, N, M, K, n0, std::min(N, n0 + kTileCols));
  });
}

ffi::Error Bf16MatvecImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::Buffer<ffi::BF16> w, ffi::ResultBuffer<ffi::F32> y) {
  if (!ShapesOk(x.dimensions(), w.dimensions(), y->dimensions())) {
    return ffi::Error::InvalidArgument(
        "secoustic_bf16_matvec: expects x f32[M, K], w bf16[K, N] -> y f32[M, N]");
  }
  const int64_t M = x.dimensions()[0], K = x.dimensions()[1], N = w.dimensions()[1];
  Matvec(pool, x.typed_data(), reinterpret_cast<const uint16_t*>(w.untyped_data()),
         y->typed_data(), M, K, N);
  return ffi::Error::Success();
}

// int8 weights with one float32 scale per output column: y = (x @ float32(q)) * scale,
// the product accumulated exactly as for bf16, then one rounding for the scale.
ffi::Error Int8MatvecImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> w,
                          ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  const auto sd = scale.dimensions();
  if (!ShapesOk(x.dimensions(), w.dimensions(), y->dimensions()) || sd.size() != 1 ||
      sd[0] != w.dimensions()[1]) {
    return ffi::Error::InvalidArgument(
        "secoustic_int8_matvec: expects x f32[M, K], w s8[K, N], scale f32[N] -> y f32[M, N]");
  }
  const int64_t M = x.dimensions()[0], K = x.dimensions()[1], N = w.dimensions()[1];
  float* out = y->typed_data();
  Matvec(pool, x.typed_data(), w.typed_data(), out, M, K, N);
  const float* s = scale.typed_data();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) out[m * N + n] *= s[n];
  return ffi::Error::Success();
}

}  // namespace
}  // namespace secoustic

XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticInt8Matvec, secoustic::Int8MatvecImpl,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::S8>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticBf16Matvec, secoustic::Bf16MatvecImpl,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::BF16>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>());
