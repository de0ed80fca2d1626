// Shared pieces of the CPU custom calls: widening of the narrow weight types (bf16 held as
// uint16 bits, int8; float32 passes through), the register-tiled y[M, n0:n0+16*NV] = x[M, K] @ float32(w[K, N])
// block for either type, and a parallel-for over XLA's intra-op thread pool that is
// deterministic (each output element is computed by exactly one task, in the same order,
// whichever thread runs it).
//
// Every output element accumulates over k = 0..K-1 in order with one fused multiply-add
// per term, in every code path (AVX-512 tiles, 16-wide tails, scalar tails), so a row's
// result does not depend on M, on the tile it fell in, or on the thread that ran it. A
// build without AVX-512 (scalar loops) gives the same mat-vec and mix results bit for bit
// (checked on 2026-12-02 against an -march=x86-64-v3 build); only the ring scores, whose
// dot products reduce 16 lanes, differ there by float32 summation order.

#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace secoustic {

namespace ffi = xla::ffi;

// Exact float32 value of one weight: uint16 = bf16 bit pattern, int8 = integer.
inline float ToF32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;  // bf16 is the top half of an f32
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float ToF32(int8_t q) { return static_cast<float>(q); }
inline float ToF32(float f) { return f; }

#if defined(__AVX512F__)
// 16 weights at p -> 16 float32 lanes (exact for both types).
inline __m512 Widen16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 Widen16(const int8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}
inline __m512 Widen16(const float* p) { return _mm512_loadu_ps(p); }

// Rows r < MR of y (row stride ldy), columns n0 .. n0 + 16 NV: accumulators stay in
// registers for the whole k loop, so each weight vector is widened once per MR rows.
template <int MR, int NV, typename W>
inline void TileAvx(const float* x, int64_t ldx, const W* w, int64_t ldw, float* y,
                    int64_t ldy, int64_t K, int64_t n0) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  const W* wp = w + n0;
  for (int64_t k = 0; k < K; ++k, wp += ldw) {
    __m512 wv[NV];
    for (int j = 0; j < NV; ++j) wv[j] = Widen16(wp + 16 * j);
    for (int r = 0; r < MR; ++r) {
      const __m512 b = _mm512_set1_ps(x[r * ldx + k]);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(b, wv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(y + r * ldy + n0 + 16 * j, acc[r][j]);
}

template <int NV, typename W>
inline void RowsAvx(const float* x, int64_t ldx, const W* w, int64_t ldw, float* y,
                    int64_t ldy, int64_t M, int64_t K, int64_t n0) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) TileAvx<4, NV>(x + m * ldx, ldx, w, ldw, y + m * ldy, ldy, K, n0);
  const float* xm = x + m * ldx;
  float* ym = y + m * ldy;
  switch (M - m) {
    case 3: TileAvx<3, NV>(xm, ldx, w, ldw, ym, ldy, K, n0); break;
    case 2: TileAvx<2, NV>(xm, ldx, w, ldw, ym, ldy, K, n0); break;
    case 1: TileAvx<1, NV>(xm, ldx, w, ldw, ym, ldy, K, n0); break;
    default: break;
  }
}
#endif

constexpr int64_t kTileCols = 64;  // columns per task of the tiled product (4 zmm)

// y[:, n0:n1] = x[M, K] @ float32(w[K, ldw][:, n0:n1]); n1 - n0 <= kTileCols.
template <typename W>
void ColumnBlock(const float* x, int64_t ldx, const W* w, int64_t ldw, float* y,
                 int64_t ldy, int64_t M, int64_t K, int64_t n0, int64_t n1) {
  int64_t n = n0;
#if defined(__AVX512F__)
  if (n1 - n == kTileCols) {
    RowsAvx<4>(x, ldx, w, ldw, y, ldy, M, K, n);
    return;
  }
  for (; n + 16 <= n1; n += 16) RowsAvx<1>(x, ldx, w, ldw, y, ldy, M, K, n);
#endif
  for (; n < n1; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc = std::fma(x[m * ldx + k], ToF32(w[k * ldw + n]), acc);
      y[m * ldy + n] = acc;
    }
  }
}

// o[n] = fma(a, float32(w[n]), o[n]) for n < N: one weight row into the accumulator row.
template <typename W>
inline void Axpy(float* o, const W* w, float a, int64_t N) {
  int64_t n = 0;
#if defined(__AVX512F__)
  const __m512 b = _mm512_set1_ps(a);
  for (; n + 16 <= N; n += 16) {
    _mm512_storeu_ps(o + n, _mm512_fmadd_ps(b, Widen16(w + n), _mm512_loadu_ps(o + n)));
  }
#endif
  for (; n < N; ++n) o[n] = std::fma(a, ToF32(w[n]), o[n]);
}

// Runs fn(i) for i in [0, n) on the calling thread and up to `helpers` pool threads.
// Tasks are handed out by an atomic counter; the caller returns once every task that was
// started has finished. A pool thread that starts late finds no task left and returns at
// once (the shared state outlives the call), so a busy pool can delay but never block it.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int helpers, const Fn& fn) {
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto s = std::make_shared<Shared>();
  helpers = std::max(0, std::min<int>(helpers, static_cast<int>(pool.num_threads())));
  helpers = static_cast<int>(std::min<int64_t>(helpers, n - 1));
  // fn is captured by pointer: a late helper never calls it (next >= n by then).
  auto work = [s, n, f = &fn] {
    for (int64_t i; (i = s->next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      (*f)(i);
      s->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int h = 0; h < helpers; ++h) {
    auto copy = work;  // Schedule takes the task by value (F&&)
    pool.Schedule(std::move(copy));
  }
  work();
  while (s->done.load(std::memory_order_acquire) < n) {
#if defined(__AVX512F__)
    _mm_pause();
#endif
  }
}

}  // namespace secoustic
