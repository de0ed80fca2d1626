"""The ONE declarative name table of the codec: official state-dict key <-> Flax path.

`codec_table(cfg)` lists every official state-dict entry of `SecoustiCodec(cfg)` in
official state-dict order (model.md §15), with its torch shape, dtype and the layout
transform of `checkpoint.table`. It is built from the config alone, so it covers any
layer count, width or SEANet ratio list: 412 entries for the full presets, 132 for the
golden official-tiny configuration. The Flax paths are those of the network contract in
docs/DEVELOPING.md (collection first: `params` or `batch_stats`).

The SEANet index walk mirrors moshi's constructor (and `layers.seanet`, which this
module does not import: checkpoint code reads only the config, see the import
direction in docs/DEVELOPING.md). tests/test_codec_names.py checks the table against
the reference TSVs and against the real module's parameter tree.
"""

from __future__ import annotations

from secoustic_jax.checkpoint.table import Entry
from secoustic_jax.config.model import CodecConfig, SEANetConfig, TransformerConfig

# Official sub-module order of the state dict (model.md §15).
TOP_LEVEL_ORDER = ("paralinguistic_encoder", "fsq", "encoder", "decoder", "encoder_transformer",
                   "decoder_transformer", "vae_semantic_transformer", "semantic_connector")

def _linear(key: str, path: tuple, n_in: int, n_out: int, bias: bool = True) -> list[Entry]:
    """torch Linear(n_in, n_out): weight [out, in] <-> Dense kernel [in, out] (+ bias [out])."""
    rows = [Entry(f"{key}.weight", path + ("kernel",), (n_out, n_in), "linear")]
    if bias:
        rows.append(Entry(f"{key}.bias", path + ("bias",), (n_out,)))
    return rows


def _conv(key: str, path: tuple, n_in: int, n_out: int, k: int, transposed: bool = False):
    """Conv1d weight [out, in, k] / ConvTranspose1d weight [in, out, k] + bias [out]."""
    if transposed:
        return [Entry(f"{key}.weight", path + ("kernel",), (n_in, n_out, k), "conv_transpose1d"),
                Entry(f"{key}.bias", path + ("bias",), (n_out,))]
    return [Entry(f"{key}.weight", path + ("kernel",), (n_out, n_in, k), "conv1d"),
            Entry(f"{key}.bias", path + ("bias",), (n_out,))]


def paralinguistic_entries(cfg: CodecConfig) -> list[Entry]:
    """52 entries for the official widths: 6 x (Conv2d, BatchNorm + buffers), SE, GRU, heads."""
    p = cfg.paralinguistic
    pre, root = "paralinguistic_encoder", ("paralinguistic_encoder",)
    rows: list[Entry] = []
    n_in = p.n_mels
    for i, n_out in enumerate(p.channels, start=1):
        conv, bn = f"conv2d_{i}", f"batchnorm_{i}"
        # Full 3x3 kernel kept (dead outer width columns round-trip losslessly, model.md §8).
        rows += [Entry(f"{pre}.{conv}.weight", ("params",) + root + (conv, "kernel"),
                       (n_out, n_in, 3, 3), "conv2d"),
                 Entry(f"{pre}.{conv}.bias", ("params",) + root + (conv, "bias"), (n_out,))]
        stats = ("batch_stats",) + root + (bn,)
        rows += [Entry(f"{pre}.{bn}.weight", ("params",) + root + (bn, "scale"), (n_out,)),
                 Entry(f"{pre}.{bn}.bias", ("params",) + root + (bn, "bias"), (n_out,)),
                 Entry(f"{pre}.{bn}.running_mean", stats + ("mean",), (n_out,)),
                 Entry(f"{pre}.{bn}.running_var", stats + ("var",), (n_out,)),
                 Entry(f"{pre}.{bn}.num_batches_tracked", stats + ("num_batches_tracked",), (),
                       "count", "int64")]
        n_in = n_out
    c, h = p.channels[-1], p.gru_hidden
    r = c // p.se_reduction
    base = ("params",) + root
    rows += _linear(f"{pre}.senet.fc.0", base + ("senet", "fc_0"), c, r, bias=False)
    rows += _linear(f"{pre}.senet.fc.2", base + ("senet", "fc_2"), r, c, bias=False)
    gru = base + ("gru",)  # PyTorch layout kept as is (gates r|z|n), hand-written cell
    rows += [Entry(f"{pre}.gru.weight_ih_l0", gru + ("weight_ih",), (3 * h, c)),
             Entry(f"{pre}.gru.weight_hh_l0", gru + ("weight_hh",), (3 * h, h)),
             Entry(f"{pre}.gru.bias_ih_l0", gru + ("bias_ih",), (3 * h,)),
             Entry(f"{pre}.gru.bias_hh_l0", gru + ("bias_hh",), (3 * h,))]
    rows += _linear(f"{pre}.dense_mu", base + ("dense_mu",), h, p.embed_dim)
    rows += _linear(f"{pre}.dense_var", base + ("dense_var",), h, p.embed_dim)
    return rows


def fsq_entries(cfg: CodecConfig) -> list[Entry]:
    """project_in (d -> n_codes) and project_out (n_codes -> d), both with bias."""
    n = len(cfg.fsq.levels)
    return (_linear("fsq.project_in", ("params", "fsq", "project_in"), cfg.fsq.dim, n)
            + _linear("fsq.project_out", ("params", "fsq", "project_out"), n, cfg.fsq.dim))


def _resblock(key: str, path: tuple, dim: int, cfg: SEANetConfig) -> list[Entry]:
    """ResBlock: block.1 conv C -> C/compress (residual kernel), block.3 conv back (k1)."""
    hidden = dim // cfg.compress
    return (_conv(f"{key}.block.1.conv.conv", path + ("block_1",), dim, hidden,
                  cfg.residual_kernel_size)
            + _conv(f"{key}.block.3.conv.conv", path + ("block_3",), hidden, dim, 1))


def seanet_encoder_entries(cfg: SEANetConfig) -> list[Entry]:
    """encoder.model.i: conv, per reversed ratio (ResBlocks, ELU, strided conv), ELU, conv."""
    nf = cfg.n_filters
    base = ("params", "encoder")
    rows = _conv("encoder.model.0.conv.conv", base + ("layer_0",), cfg.channels, nf,
                 cfg.kernel_size)
    idx, mult = 1, 1
    for ratio in reversed(cfg.ratios):  # moshi's encoder walks the ratios in reverse
        for _ in range(cfg.n_residual_layers):
            rows += _resblock(f"encoder.model.{idx}", base + (f"layer_{idx}",), mult * nf, cfg)
            idx += 1
        idx += 1  # ELU
        rows += _conv(f"encoder.model.{idx}.conv.conv", base + (f"layer_{idx}",), mult * nf,
                      2 * mult * nf, 2 * ratio)
        idx, mult = idx + 1, mult * 2
    idx += 1  # ELU
    rows += _conv(f"encoder.model.{idx}.conv.conv", base + (f"layer_{idx}",), mult * nf,
                  cfg.dimension, cfg.last_kernel_size)
    return rows


def seanet_decoder_entries(cfg: SEANetConfig) -> list[Entry]:
    """decoder.model.i: conv, per ratio (ELU, transposed conv, ResBlocks), ELU, conv."""
    nf = cfg.n_filters
    mult = 2 ** len(cfg.ratios)
    base = ("params", "decoder")
    rows = _conv("decoder.model.0.conv.conv", base + ("layer_0",), cfg.dimension, mult * nf,
                 cfg.kernel_size)
    idx = 1
    for ratio in cfg.ratios:
        idx += 1  # ELU
        rows += _conv(f"decoder.model.{idx}.convtr.convtr", base + (f"layer_{idx}",),
                      mult * nf, mult * nf // 2, 2 * ratio, transposed=True)
        idx += 1
        for _ in range(cfg.n_residual_layers):
            rows += _resblock(f"decoder.model.{idx}", base + (f"layer_{idx}",), mult * nf // 2,
                              cfg)
            idx += 1
        mult //= 2
    idx += 1  # ELU
    rows += _conv(f"decoder.model.{idx}.conv.conv", base + (f"layer_{idx}",), nf, cfg.channels,
                  cfg.last_kernel_size)
    return rows


def transformer_entries(key: str, path: tuple, cfg: TransformerConfig) -> list[Entry]:
    """One ProjectedTransformer: per layer fused in_proj, out_proj, 2 LayerNorms, FFN, 2 LayerScales."""
    d, f = cfg.d_model, cfg.dim_feedforward
    rows: list[Entry] = []
    for i in range(cfg.num_layers):
        k, p = f"{key}.transformer.layers.{i}", ("params",) + path + (f"layers_{i}",)
        rows += [Entry(f"{k}.self_attn.in_proj_weight", p + ("self_attn", "in_proj", "kernel"),
                       (3 * d, d), "linear")]
        rows += _linear(f"{k}.self_attn.out_proj", p + ("self_attn", "out_proj"), d, d, False)
        for norm in ("norm1", "norm2"):
            rows += [Entry(f"{k}.{norm}.weight", p + (norm, "scale"), (d,)),
                     Entry(f"{k}.{norm}.bias", p + (norm, "bias"), (d,))]
        rows += _linear(f"{k}.linear1", p + ("linear1",), d, f, bias=False)
        rows += _linear(f"{k}.linear2", p + ("linear2",), f, d, bias=False)
        rows += [Entry(f"{k}.layer_scale_1.scale", p + ("layer_scale_1", "scale"), (d,)),
                 Entry(f"{k}.layer_scale_2.scale", p + ("layer_scale_2", "scale"), (d,))]
    return rows


def codec_table(cfg: CodecConfig) -> list[Entry]:
    """Every official state-dict entry of the codec, in official order (412 for full presets)."""
    t, d = cfg.transformer, cfg.transformer.d_model
    vae = ("vae_semantic_transformer",)
    return (paralinguistic_entries(cfg)
            + fsq_entries(cfg)
            + seanet_encoder_entries(cfg.seanet)
            + seanet_decoder_entries(cfg.seanet)
            + transformer_entries("encoder_transformer", ("encoder_transformer",), t)
            + transformer_entries("decoder_transformer", ("decoder_transformer",), t)
            + transformer_entries("vae_semantic_transformer.semantic_transformer",
                                  vae + ("semantic_transformer",), t)
            + _linear("vae_semantic_transformer.dense_mu", ("params",) + vae + ("dense_mu",), d, d)
            + _linear("vae_semantic_transformer.dense_var", ("params",) + vae + ("dense_var",), d, d)
            + transformer_entries("semantic_connector.semantic_transformer",
                                  ("semantic_connector", "semantic_transformer"), t))


def parameter_count(cfg: CodecConfig) -> int:
    """Number of trainable parameters (the `params` collection; buffers excluded)."""
    total = 0
    for e in codec_table(cfg):
        if e.path[0] == "params":
            n = 1
            for s in e.torch_shape:
                n *= s
            total += n
    return total


def resample_keys(cfg: SEANetConfig) -> list[tuple[str, int]]:
    """(torch weight key, ratio) of every strided resampling conv; kernel width = 2 * ratio.

    For the official layout: encoder.model.{3,6}.conv.conv.weight and
    decoder.model.{2,5}.convtr.convtr.weight. Used to recognise a checkpoint's variant.
    """
    out, idx = [], 1
    for ratio in reversed(cfg.ratios):
        idx += cfg.n_residual_layers + 1
        out.append((f"encoder.model.{idx}.conv.conv.weight", ratio))
        idx += 1
    idx = 1
    for ratio in cfg.ratios:
        idx += 1
        out.append((f"decoder.model.{idx}.convtr.convtr.weight", ratio))
        idx += 1 + cfg.n_residual_layers
    return out
