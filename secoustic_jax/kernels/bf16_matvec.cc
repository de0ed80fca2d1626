// y[M, N] = x[M, K] @ float32(w[K, N]) for bfloat16 weights with float32 accumulation: an
// XLA FFI custom call for the small-M (batch 1-4) streaming steps on CPU, which are bound
// by the bytes of weight they read. XLA:CPU's own bf16 dot at M = 1 runs ~10x slower than
// its float32 dot; this kernel reads half the bytes of the float32 dot.
//
// Access pattern (measured on a 2-core Zen 4 VM, bench/NOTES.md section 5): one weight row
// at a time, so the whole matrix is read as one sequential stream (24.6 GB/s on one core). Four rows
// per pass (four streams 2N bytes apart, a page apart at N = 2048) ran at 13.6 GB/s, and a
// second thread (XLA's intra-op pool or a spinning helper) added < 10 % in the real step,
// so the kernel is single-threaded: deterministic, and free to run beside other streams.
// Each y[m, n] accumulates over k = 0..K-1 in order with fused multiply-adds.

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline float Bf16ToF32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;  // bf16 is the top half of an f32
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// o[n] = fma(a, float32(w[n]), o[n]) for n < N.
void Axpy(float* o, const uint16_t* w, float a, int64_t N) {
  int64_t n = 0;
#if defined(__AVX512F__)
  const __m512 b = _mm512_set1_ps(a);
  for (; n + 16 <= N; n += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + n));
    const __m512 wf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    _mm512_storeu_ps(o + n, _mm512_fmadd_ps(b, wf, _mm512_loadu_ps(o + n)));
  }
#endif
  for (; n < N; ++n) o[n] = std::fma(a, Bf16ToF32(w[n]), o[n]);
}

ffi::Error Bf16MatvecImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::BF16> w,
                          ffi::ResultBuffer<ffi::F32> y) {
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
  std::memset(out, 0, sizeof(float) * M * N);
  // k outer, m inner: row k is read from memory once and from L1 for the other M - 1 rows.
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m = 0; m < M; ++m) Axpy(out + m * N, ws + k * N, xs[m * K + k], N);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticBf16Matvec, Bf16MatvecImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
