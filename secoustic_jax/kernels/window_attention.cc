// Offline causal windowed attention with RoPE on CPU, fused: the in_proj output
// qkv f32[B, T, 3, H, D] and the RoPE tables cos, sin f32[B or 1, T, D/2] -> o f32[B, T, H, D],
//   o[b, t, h] = sum_s softmax_s(scale * q'[b, t, h] . k'[b, s, h]) v[b, s, h]
// over t - context < s <= t, with q', k' the rotated queries and keys.
//
// XLA's form (layers/rope.py, then layers/attention.py `banded_attention`) rotates and
// transposes q and k to [B, H, T, D] through memory, gathers key bands, and runs the band
// logits and weighted sums as batched [128, 64] x [64, 377] dots at ~100-130 GFLOP/s on 2
// Zen 5 cores (~340 for the layer's large dots): ~17 ms of a 32 ms 86 Hz layer at
// T = 861 (bench/NOTES.md section 8). Here each task rotates its queries and keys while
// reading them from the in_proj rows (keys into a transposed copy, so the score tiles of
// common.h need no horizontal sums); each block of 16 queries computes its scores over its
// 16 + context - 1 keys, the softmax over exactly its window, and the weighted values, in
// cache, and writes the rows in the layout out_proj reads.
//
// Arithmetic: scores are fma chains over d in order; the logit is score * scale; the
// softmax is exp(x - max) / sum with a Cephes-style float32 exp (< 2 ulp) and a fixed
// 16-lane summation order; the weighted sum is an fma chain over keys in order. Every
// output row is computed by one task, so results do not depend on the thread schedule.
// A build without AVX-512 uses the same exp; its softmax sum reduces in another order.

#include <algorithm>
#include <vector>

#include "common.h"

namespace secoustic {
namespace {

constexpr int64_t kRows = 16;          // queries per softmax block
constexpr int64_t kBlocksPerTask = 4;  // blocks sharing one transposed key range
constexpr int64_t kThreadedFlops = int64_t{1} << 21;

inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Cephes expf: n = round(x log2 e), r = x - n ln 2 (two parts), degree-7 polynomial, 2^n.
// x is clamped to [-103, 88.3] (exp(-103) is 0 in float32 after scaling by 2^n).
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                         4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline float ExpScalar(float x) {
  x = std::min(std::max(x, -103.0f), 88.3f);
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
  float p = kP[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kP[i]);
  const float y = std::fma(p, r * r, r) + 1.0f;
  return std::ldexp(y, static_cast<int>(n));
}

#if defined(__AVX512F__)
inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-103.0f)), _mm512_set1_ps(88.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kP[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP[i]));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}
#endif

// Row s[0 .. w) of raw scores -> probabilities in place, over the valid keys [a, b]
// (everything else becomes 0): x = s * scale, p = exp(x - max) / sum.
void SoftmaxRow(float* s, int64_t w, int64_t a, int64_t b, float scale) {
  const int64_t n = b - a + 1;
  float* x = s + a;
  std::fill(s, x, 0.0f);
  std::fill(s + b + 1, s + w, 0.0f);
  float m = -INFINITY, sum = 0.0f;
  int64_t j = 0;
#if defined(__AVX512F__)
  const __m512 sc = _mm512_set1_ps(scale);
  __m512 vm = _mm512_set1_ps(-INFINITY);
  for (; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), sc);
    _mm512_mask_storeu_ps(x + j, k, v);
    vm = _mm512_mask_max_ps(vm, k, vm, v);
  }
  m = _mm512_reduce_max_ps(vm);
  const __m512 mv = _mm512_set1_ps(m);
  __m512 vs = _mm512_setzero_ps();
  for (j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mv));
    _mm512_mask_storeu_ps(x + j, k, e);
    vs = _mm512_mask_add_ps(vs, k, vs, e);
  }
  sum = _mm512_reduce_add_ps(vs);
  const __m512 inv = _mm512_set1_ps(sum);
  for (j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(x + j, k, _mm512_div_ps(_mm512_maskz_loadu_ps(k, x + j), inv));
  }
#else
  for (j = 0; j < n; ++j) m = std::max(m, x[j] = x[j] * scale);
  for (j = 0; j < n; ++j) sum += (x[j] = ExpScalar(x[j] - m));
  for (j = 0; j < n; ++j) x[j] /= sum;
#endif
}

struct Problem {
  const float *qkv, *cos, *sin;
  float* o;
  int64_t B, T, H, D, context;
  bool shared_angles;  // cos/sin are [1, T, D/2] (one position table for the batch)
  float scale;
};

// dst[0 .. D) = the RoPE rotation of src (pairs (x[2i], x[2i+1]) by the angle with cos c[i],
// sin s[i]), computed like layers/rope.py: (xr c - xi s, xr s + xi c).
inline void Rotate(float* dst, int64_t stride, const float* src, const float* c, const float* s,
                   int64_t D) {
  for (int64_t i = 0; i < D / 2; ++i) {
    const float xr = src[2 * i], xi = src[2 * i + 1];
    dst[(2 * i) * stride] = xr * c[i] - xi * s[i];
    dst[(2 * i + 1) * stride] = xr * s[i] + xi * c[i];
  }
}

// Query rows [r0, r1) of batch item b, head h.
void Task(const Problem& p, int64_t b, int64_t h, int64_t r0, int64_t r1) {
  const int64_t T = p.T, D = p.D, C = p.context, row = 3 * p.H * D;  // qkv row stride
  const float* base = p.qkv + b * T * row + h * D;  // q of (b, 0, h); k at +H*D, v at +2H*D
  const int64_t angles = (p.shared_angles ? 0 : b * T) * (D / 2);
  const float *cs = p.cos + angles, *sn = p.sin + angles;
  // Rotated queries of the task, and its keys rotated and transposed: kt[d, j] = k[lo + j, d]
  // (zero past hi), so the score tiles need no horizontal sums.
  const int64_t lo = std::max<int64_t>(0, r0 - C + 1), hi = r1;
  const int64_t ld = RoundUp(hi - lo, 16) + 16;
  std::vector<float> q((r1 - r0) * D), kt(D * ld, 0.0f);
  for (int64_t t = r0; t < r1; ++t)
    Rotate(q.data() + (t - r0) * D, 1, base + t * row, cs + t * (D / 2), sn + t * (D / 2), D);
  for (int64_t j = lo; j < hi; ++j)
    Rotate(kt.data() + (j - lo), ld, base + j * row + p.H * D, cs + j * (D / 2), sn + j * (D / 2), D);
  const float* v = base + 2 * p.H * D;
  float* o = p.o + b * T * p.H * D + h * D;  // out [B, T, H, D]
  const int64_t lds = RoundUp(kRows + C - 1, 16) + 16;
  std::vector<float> s(kRows * lds);
  for (int64_t t0 = r0; t0 < r1; t0 += kRows) {
    const int64_t rows = std::min(kRows, r1 - t0);
    const int64_t blo = std::max<int64_t>(0, t0 - C + 1), w = t0 + rows - blo;
    const int64_t wpad = RoundUp(w, 16);
    for (int64_t n0 = 0; n0 < wpad; n0 += kTileCols)  // s = q[t0 : t0+rows] @ kt[:, band]
      ColumnBlock(q.data() + (t0 - r0) * D, D, kt.data() + (blo - lo), ld, s.data(), lds, rows,
                  D, n0, std::min(wpad, n0 + kTileCols));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = t0 + r;
      SoftmaxRow(s.data() + r * lds, w, std::max<int64_t>(0, t - C + 1) - blo, t - blo, p.scale);
    }
    for (int64_t n0 = 0; n0 < D; n0 += kTileCols)  // o[t0 : t0+rows] = p @ v[band]
      ColumnBlock(s.data(), lds, v + blo * row, row, o + t0 * p.H * D, p.H * D, rows, w, n0,
                  std::min(D, n0 + kTileCols));
  }
}

ffi::Error WindowImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> cos,
                      ffi::Buffer<ffi::F32> sin, ffi::ResultBuffer<ffi::F32> o, int64_t context,
                      float scale) {
  const auto xd = qkv.dimensions(), cd = cos.dimensions(), od = o->dimensions();
  const bool ok = xd.size() == 5 && xd[2] == 3 && xd[4] % 2 == 0 && cd.size() == 3 &&
                  (cd[0] == 1 || cd[0] == xd[0]) && cd[1] == xd[1] && cd[2] == xd[4] / 2 &&
                  sin.dimensions().size() == 3 &&
                  std::equal(cd.begin(), cd.end(), sin.dimensions().begin()) && od.size() == 4 &&
                  od[0] == xd[0] && od[1] == xd[1] && od[2] == xd[3] && od[3] == xd[4];
  if (!ok || context < 1) {
    return ffi::Error::InvalidArgument(
        "secoustic_window_attention: expects qkv f32[B, T, 3, H, D] (D even), cos and sin "
        "f32[B or 1, T, D/2] -> f32[B, T, H, D], context >= 1");
  }
  const Problem p{qkv.typed_data(), cos.typed_data(), sin.typed_data(), o->typed_data(),
                  xd[0], xd[1], xd[3], xd[4], context, cd[0] == 1 && xd[0] > 1, scale};
  const int64_t span = kRows * kBlocksPerTask, chunks = (p.T + span - 1) / span;
  const int64_t flops = 4 * p.B * p.H * p.T * std::min(context, p.T) * p.D;
  ParallelFor(pool, p.B * p.H * chunks, flops >= kThreadedFlops ? pool.num_threads() : 0,
              [&](int64_t i) {
                const int64_t bh = i / chunks, r0 = (i % chunks) * span;
                Task(p, bh / p.H, bh % p.H, r0, std::min(p.T, r0 + span));
              });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace secoustic

XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticWindowAttention, secoustic::WindowImpl,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Attr<int64_t>("context")
                                  .Attr<float>("scale"));

// 1 when the build has the AVX-512 path. Without it the kernel runs a scalar loop, which is
// slower than XLA's own attention (4x at T = 861 on AVX2), so Python stages it only with it.
extern "C" int secoustic_window_attention_vectorised() {
#if defined(__AVX512F__)
  return 1;
#else
  return 0;
#endif
}
