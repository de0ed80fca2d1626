"""Name table of the HiFT vocoder: official `hift.pt` keys <-> Flax paths (model.md §15).

227 entries for the default config, in state-dict order. Weight norm stays two tensors on
both sides (`original0` = g -> `weight_g` [C] via "squeeze"; `original1` = v -> `weight_v`
[k, in, out]), so import -> export is bit-exact and the parameter count is the official
one. For the ConvTranspose1d `ups.*`, g is per INPUT channel ([in, 1, 1]).
"""

from __future__ import annotations

from secoustic_jax.checkpoint.table import Entry
from secoustic_jax.config.hift import HiFTConfig

_G = "parametrizations.weight.original0"
_V = "parametrizations.weight.original1"


def _wn_conv(key: str, path: tuple, cin: int, cout: int, k: int) -> list[Entry]:
    p = ("params",) + path
    return [Entry(f"{key}.bias", p + ("bias",), (cout,)),
            Entry(f"{key}.{_G}", p + ("weight_g",), (cout, 1, 1), "squeeze"),
            Entry(f"{key}.{_V}", p + ("weight_v",), (cout, cin, k), "conv1d")]


def _wn_conv_transpose(key: str, path: tuple, cin: int, cout: int, k: int) -> list[Entry]:
    p = ("params",) + path
    return [Entry(f"{key}.bias", p + ("bias",), (cout,)),
            Entry(f"{key}.{_G}", p + ("weight_g",), (cin, 1, 1), "squeeze"),
            Entry(f"{key}.{_V}", p + ("weight_v",), (cin, cout, k), "conv_transpose1d")]


def _linear(key: str, path: tuple, cin: int, cout: int) -> list[Entry]:
    p = ("params",) + path
    return [Entry(f"{key}.weight", p + ("kernel",), (cout, cin), "linear"),
            Entry(f"{key}.bias", p + ("bias",), (cout,))]


def _resblock(key: str, path: tuple, ch: int, k: int, dilations) -> list[Entry]:
    rows = []
    for conv in ("convs1", "convs2"):
        for i in range(len(dilations)):
            rows += _wn_conv(f"{key}.{conv}.{i}", path + (f"{conv}_{i}",), ch, ch, k)
    for act in ("activations1", "activations2"):
        for i in range(len(dilations)):
            rows.append(Entry(f"{key}.{act}.{i}.alpha",
                              ("params",) + path + (f"{act}_{i}", "alpha"), (ch,)))
    return rows


def hift_table(cfg: HiFTConfig) -> list[Entry]:
    """Every official HiFT state-dict entry for `cfg`, in the official order."""
    c = cfg
    rows = _linear("m_source.l_linear", ("m_source", "l_linear"), c.num_sines, 1)
    rows += _wn_conv("conv_pre", ("conv_pre",), c.in_channels, c.base_channels, 7)
    n = len(c.upsample_rates)
    for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
        rows += _wn_conv_transpose(f"ups.{i}", (f"ups_{i}",), c.base_channels // 2 ** i,
                                   c.stage_channels(i), k)
    for i in range(n):
        dk = c.source_down_geometry(i)[0]
        p = ("params", f"source_downs_{i}")
        rows += [Entry(f"source_downs.{i}.weight", p + ("kernel",),
                       (c.stage_channels(i), 2 * c.stft_bins, dk), "conv1d"),
                 Entry(f"source_downs.{i}.bias", p + ("bias",), (c.stage_channels(i),))]
    for i in range(n):
        rows += _resblock(f"source_resblocks.{i}", (f"source_resblocks_{i}",),
                          c.stage_channels(i), c.source_resblock_kernel_sizes[i],
                          c.source_resblock_dilation_sizes[i])
    nk = len(c.resblock_kernel_sizes)
    for i in range(n):
        for j, (k, d) in enumerate(zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)):
            idx = i * nk + j
            rows += _resblock(f"resblocks.{idx}", (f"resblocks_{idx}",), c.stage_channels(i), k, d)
    rows += _wn_conv("conv_post", ("conv_post",), c.stage_channels(n - 1), 2 * c.stft_bins, 7)
    cin = c.in_channels
    for i in range(c.f0_num_layers):
        rows += _wn_conv(f"f0_predictor.condnet.{2 * i}", ("f0_predictor", f"condnet_{2 * i}"),
                         cin, c.f0_cond_channels, 3)
        cin = c.f0_cond_channels
    rows += _linear("f0_predictor.classifier", ("f0_predictor", "classifier"),
                    c.f0_cond_channels, 1)
    return rows
