// 1-D convolution with bfloat16 operands and float32 accumulation on CPU (AVX512_BF16):
//   y[b, t, n] = bias[n] + sum_k sum_c bf16(x[b, t - pad + k dil, c]) w[k, c, n]
// (x is zero outside [0, T)), x f32[B, T, Cin], w the bf16 kernel packed as channel pairs
// u32[K, Cin/2, Cout] (low half channel 2i, high half 2i + 1), Cout a multiple of 64.
//
// For the HiFT vocoder's ResBlock convs, ~90 % of its 520 GFLOP per 10 s: XLA:CPU runs them
// in float32 at ~300 GFLOP/s on 2 Zen 5 cores, and its bf16 convs are no faster (it widens
// them). VDPBF16PS does 32 multiply-adds per instruction where VFMADD231PS does 16
// (measured 360 vs 157 GFLOP/s on one core). Each task converts its input rows to bf16
// once (round to nearest even), then 6-row x 64-column register tiles run the whole
// K x Cin/2 loop per tile with weights from L2.
//
// Every output element is one accumulation chain in (k, channel pair) order, computed by
// one task: deterministic, independent of the thread schedule. The instruction flushes
// bf16 subnormal inputs and float32 subnormal results to zero. A build without
// AVX512_BF16 refuses the call (`secoustic_has_bf16_conv` tells Python beforehand).

#include <vector>

#include "common.h"

namespace secoustic {
namespace {

constexpr int64_t kRowsPerTile = 6, kColsPerTile = 64, kTilesPerTask = 16;

inline uint16_t ToBf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

struct Conv {
  const float* x;
  const uint32_t* w;
  const float* bias;
  float* y;
  int64_t T, C2, K, Cout, Tout, dil, pad;
};

// Input rows [lo, lo + n) of item b as bf16 channel pairs (zero rows outside [0, T)).
void ToPairs(const Conv& p, const float* x, int64_t lo, int64_t n, uint32_t* out) {
  uint16_t* h = reinterpret_cast<uint16_t*>(out);
  const int64_t c = 2 * p.C2;
  for (int64_t i = 0; i < n; ++i, h += c) {
    const int64_t t = lo + i;
    if (t < 0 || t >= p.T) {
      std::fill(h, h + c, uint16_t{0});
      continue;
    }
    const float* row = x + t * c;
    int64_t j = 0;
#if defined(__AVX512BF16__)
    for (; j + 32 <= c; j += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + j + 16), _mm512_loadu_ps(row + j));
      _mm512_storeu_si512(h + j, reinterpret_cast<const __m512i&>(v));
    }
#endif
    for (; j < c; ++j) h[j] = ToBf16(row[j]);
  }
}

#if defined(__AVX512BF16__)
// Output rows r < MR (input pair rows xs + r * C2, taps k dil rows apart), columns n0 + 64.
template <int MR>
void Tile(const Conv& p, const uint32_t* xs, int64_t n0, float* y) {
  __m512 acc[MR][4];
  for (int j = 0; j < 4; ++j) {
    const __m512 b = _mm512_loadu_ps(p.bias + n0 + 16 * j);
    for (int r = 0; r < MR; ++r) acc[r][j] = b;
  }
  for (int64_t k = 0; k < p.K; ++k) {
    const uint32_t* xk = xs + k * p.dil * p.C2;
    const uint32_t* wk = p.w + k * p.C2 * p.Cout + n0;
    for (int64_t c = 0; c < p.C2; ++c) {
      __m512bh wv[4];
      for (int j = 0; j < 4; ++j) {
        const __m512i v = _mm512_loadu_si512(wk + c * p.Cout + 16 * j);
        wv[j] = reinterpret_cast<const __m512bh&>(v);
      }
      for (int r = 0; r < MR; ++r) {
        const __m512i xv = _mm512_set1_epi32(static_cast<int>(xk[r * p.C2 + c]));
        const __m512bh xb = reinterpret_cast<const __m512bh&>(xv);
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xb, wv[j]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(y + r * p.Cout + n0 + 16 * j, acc[r][j]);
}

void Rows(const Conv& p, const uint32_t* xs, int64_t rows, int64_t n0, float* y) {
  int64_t r = 0;
  for (; r + kRowsPerTile <= rows; r += kRowsPerTile) Tile<6>(p, xs + r * p.C2, n0, y + r * p.Cout);
  const uint32_t* xr = xs + r * p.C2;
  float* yr = y + r * p.Cout;
  switch (rows - r) {
    case 5: Tile<5>(p, xr, n0, yr); break;
    case 4: Tile<4>(p, xr, n0, yr); break;
    case 3: Tile<3>(p, xr, n0, yr); break;
    case 2: Tile<2>(p, xr, n0, yr); break;
    case 1: Tile<1>(p, xr, n0, yr); break;
    default: break;
  }
}
#endif

// Output rows [t0, t1) of item b: convert the input rows they read, then every column block.
void Task(const Conv& p, int64_t b, int64_t t0, int64_t t1) {
#if defined(__AVX512BF16__)
  const int64_t lo = t0 - p.pad, n = (t1 - t0) + (p.K - 1) * p.dil;
  std::vector<uint32_t> xs(n * p.C2);
  ToPairs(p, p.x + b * p.T * 2 * p.C2, lo, n, xs.data());
  float* y = p.y + (b * p.Tout + t0) * p.Cout;
  for (int64_t n0 = 0; n0 < p.Cout; n0 += kColsPerTile) Rows(p, xs.data(), t1 - t0, n0, y);
#endif
}

ffi::Error ConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U32> w,
                    ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y, int64_t dilation,
                    int64_t pad) {
#if !defined(__AVX512BF16__)
  return ffi::Error(ffi::ErrorCode::kUnimplemented,
                    "secoustic_conv_bf16: this build has no AVX512_BF16 (see has_bf16_conv)");
#endif
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  const bool ok = xd.size() == 3 && wd.size() == 3 && yd.size() == 3 && xd[2] == 2 * wd[1] &&
                  wd[2] % kColsPerTile == 0 && bias.dimensions().size() == 1 &&
                  bias.dimensions()[0] == wd[2] && yd[0] == xd[0] && yd[2] == wd[2];
  if (!ok || dilation < 1 || pad < 0) {
    return ffi::Error::InvalidArgument(
        "secoustic_conv_bf16: expects x f32[B, T, 2 C2], w u32[K, C2, Cout] (Cout % 64 == 0), "
        "bias f32[Cout] -> f32[B, Tout, Cout], dilation >= 1, pad >= 0");
  }
  const Conv p{x.typed_data(), reinterpret_cast<const uint32_t*>(w.untyped_data()),
               bias.typed_data(), y->typed_data(), xd[1], wd[1], wd[0], wd[2], yd[1],
               dilation, pad};
  const int64_t span = kRowsPerTile * kTilesPerTask, chunks = (p.Tout + span - 1) / span;
  const int64_t flops = 4 * xd[0] * p.Tout * p.K * p.C2 * p.Cout;
  ParallelFor(pool, xd[0] * chunks, flops >= (int64_t{1} << 22) ? pool.num_threads() : 0,
              [&](int64_t i) {
                const int64_t b = i / chunks, t0 = (i % chunks) * span;
                Task(p, b, t0, std::min(p.Tout, t0 + span));
              });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace secoustic

XLA_FFI_DEFINE_HANDLER_SYMBOL(SecousticConvBf16, secoustic::ConvImpl,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::U32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("pad"));

// 1 when the build has the AVX512_BF16 path (Python checks before using the call).
extern "C" int secoustic_has_bf16_conv() {
#if defined(__AVX512BF16__)
  return 1;
#else
  return 0;
#endif
}
