// Attention over a bfloat16 key/value ring for the streaming steps on CPU (float32
// queries, probabilities and accumulation):
//   scores: q f32[G, c, D], k bf16[G, C, D] -> s f32[G, c, C],  s[g, i, t] = q[g, i] . k[g, t]
//   mix:    p f32[G, c, C], v bf16[G, C, D] -> o f32[G, c, D],  o[g, i] = sum_t p[g, i, t] v[g, t]
// with G = batch x heads, c queries per step and C ring slots. The ring arrives as uint16
// bit patterns of bf16 values (how layers/attention.py stores a bf16 ring: XLA:CPU widens
// bf16 scatters to float32, so the ring writes are integer scatters). Masking and the softmax
// stay in XLA between the two calls. At one token per step these are matrix-vector
// products bound by the ring's bytes: 24 rings of [16, 8, 250, 64] are 393 MB per 21.5 Hz
// step at batch 16 in float32 (XLA's dots ran at 23.5 GB/s: 16.7 ms of a 47.8 ms step),
// half that in bf16. Large calls are split over the caller and one pool thread by blocks
// of g (common.h ParallelFor: deterministic, each g computed whole by one thread).

#include "common.h"

namespace secoustic {
namespace {

constexpr int64_t kThreadedElems = int64_t{1} << 18;  // ring elements worth a second thread
constexpr int64_t kGroupsPerTask = 4;

// sum_d q[d] * float32(k[d]): 16-lane partial sums in d order, then a fixed reduction.
inline float Dot(const float* q, const uint16_t* k, int64_t D) {
  int64_t d = 0;
  float tail = 0.0f;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (; d + 16 <= D; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), Widen16(k + d), acc);
  tail = _mm512_reduce_add_ps(acc);
#endif
  for (; d < D; ++d) tail = std::fma(q[d], ToF32(k[d]), tail);
  return tail;
}

bool ShapesOk(const ffi::Buffer<ffi::F32>& a, const ffi::Buffer<ffi::U16>& ring,
              ffi::ResultBuffer<ffi::F32>& out, bool scores) {
  const auto ad = a.dimensions(), rd = ring.dimensions(), od = out->dimensions();
  if (ad.size() != 3 || rd.size() != 3 || od.size() != 3 || ad[0] != rd[0] || od[0] != ad[0] ||
      od[1] != ad[1]) {
    return false;
  }
  // scores: a = q [G, c, D] -> [G, c, C];  mix: a = p [G, c, C] -> [G, c, D]
  return scores ? (ad[2] == rd[2] && od[2] == rd[1]) : (ad[2] == rd[1] && od[2] == rd[2]);
}

template <typename Fn>
void OverGroups(ffi::ThreadPool& pool, int64_t G, int64_t ring_elems, const Fn& per_group) {
  const int64_t tasks = (G + kGroupsPerTask - 1) / kGroupsPerTask;
  const int helpers = ring_elems >= kThreadedElems ? 1 : 0;
  ParallelFor(pool, tasks, helpers, [&](int64_t t) {
    const int64_t g1 = std::min(G, (t + 1) * kGroupsPerTask);
    for (int64_t g = t * kGroupsPerTask; g < g1; ++g) per_group(g);
  });
}

ffi::Error ScoresImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::U16> k,
                      ffi::ResultBuffer<ffi::F32> s) {
  if (!ShapesOk(q, k, s, /*scores=*/true)) {
    return ffi::Error::InvalidArgument(
        "secoustic_bf16_scores: expects q f32[G, c, D], k bf16 bits u16[G, C, D] -> f32[G, c, C]");
  }
  const auto qd = q.dimensions(), kd = k.dimensions();
  const int64_t G = qd[0], c = qd[1], D = qd[2], C = kd[1];
  const float* qs = q.typed_data();
  const uint16_t* ks = reinterpret_cast<const uint16_t*>(k.untyped_data());
  float* out = s->typed_data();
  OverGroups(pool, G, G * C * D, [&](int64_t g) {
    const uint16_t* kg = ks + g * C * D;
    for (int64_t t = 0; t < C; ++t)  // ring rows in memory order, each read once
      for (int64_t i = 0; i < c; ++i) out[(g * c + i) * C + t] = Dot(qs + (g * c + i) * D, kg + t * D, D);
  });
  return ffi::Error::Success();
}

ffi::Error MixImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::U16> v,
                   ffi::ResultBuffer<ffi::F32> o) {
  if (!ShapesOk(p, v, o, /*scores=*/false)) {
    return ffi::Error::InvalidArgument(
        "secoustic_bf16_mix: expects p f32[G, c, C], v bf16 bits u16[G, C, D] -> f32[G, c, D]");
  }
  const auto pd = p.dimensions(), vd = v.dimensions();
  const int64_t G = pd[0], c = pd[1], C = pd[2], D = vd[2];
  const float* ps = p.typed_data();
  const uint16_t* vs = reinterpret_cast<const uint16_t*>(v.untyped_data());
  float* out = o->typed_data();
  OverGroups(pool, G, G * C * D, [&](int64_t g) {
    // o[g] = p[g] [c, C] @ v[g] [C, D]: the tiled product, D columns at a time.
    for (int64_t n0 = 0; n0 < D; n0 += kTileCols) {
      ColumnBlock(ps + g * c * C, C, vs + g * C * D, D, out + g * c * D, D, c, C, n0,
                  std::min(D, n0 + kTileCols));
    }
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace secoustic

#define SECOUSTIC_RING_BINDING                        \
  xla::ffi::Ffi::Bind()                               \
      .Ctx<xla::ffi::ThreadPool>()                    \
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>()         \
      .Arg<xla::ffi::Buffer<xla::ffi::U16>>()        \
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticBf16Scores, secoustic::ScoresImpl, SECOUSTIC_RING_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticBf16Mix, secoustic::MixImpl, SECOUSTIC_RING_BINDING);
