"""The SecoustiCodec network (model.md §1, §6, §9-§11, §13) as one linen module.

Submodule names are the network contract (docs/DEVELOPING.md); the checkpoint table
`checkpoint.codec_names` maps them to the official keys. Everything is channels-last.

Entry points (all jit-able, float32 reference semantics; FSQ always float32):
- `encode(mel [B, T, 80], lengths [B] | None) -> EncodeOutput` (token rate T' = ceil(T/hop));
- `encode_tokens(mel, lengths) -> tokens [B, T'] int32` (no acoustic stack: the tokenizer);
- `prompt_embedding(mel [B, Tp, 80], lengths [B] | None) -> G [B, d]` (mu; the centred
  crop is the caller's job, see `api.Codec.prompt_embedding`);
- `decode_tokens(tokens [B, T'] int32, g [B, d]) -> mel [B, hop*T', 80]`;
- `decode_acoustic(acoustic [B, T', d]) -> mel [B, hop*T', 80]`;
- `__call__(mel, prompt_mel, prompt_lengths, *, train) -> TrainOutputs`: the training
  forward; with train=True both VAEs sample from the RNG stream "sample" and the
  paralinguistic BatchNorm uses batch statistics (mutable "batch_stats").
Inference uses the VAE means and draws no randomness (model.md §16.4).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from secoustic_jax.config.model import CodecConfig, TransformerConfig
from secoustic_jax.layers.common import EMBED, MLP, NORM, dtype_of, torch_dense
from secoustic_jax.layers.conv import CausalConv1d
from secoustic_jax.layers.seanet import SEANetDecoder, SEANetEncoder
from secoustic_jax.layers.transformer import ProjectedTransformer
from secoustic_jax.model.paralinguistic import ParalinguisticEncoder
from secoustic_jax.quantizer.fsq import FSQ


@flax.struct.dataclass
class EncodeOutput:
    """Token-rate results of `encode`: floats [B, T', .], codes float32, tokens int32 [B, T']."""

    z: Any  # SEANet output [B, T', d]
    acoustic: Any  # encoder_transformer(z) [B, T', d]
    semantic_mu: Any  # dense_mu(semantic_transformer(z)) [B, T', d]
    projected: Any  # fsq.project_in(mu) [B, T', n_codes]
    codes: Any  # round(bound(projected)) in {-1, 0, 1} [B, T', n_codes]
    tokens: Any  # FSQ index, dimension 0 least significant [B, T'] int32


@flax.struct.dataclass
class TrainOutputs:
    """Everything the losses of training.md §2 need, from one forward pass."""

    acoustic: Any  # A = T_ac(E(X)) [B, T', d]
    mel_from_acoustic: Any  # D(A) [B, hop*T', 80]
    semantic_mu: Any  # [B, T', d]
    semantic_logvar: Any  # [B, T', d]
    semantic_sample: Any  # mu + exp(lv/2) eps (train) or mu [B, T', d]
    fsq_projected: Any  # project_in(sample) [B, T', n_codes] float32
    codes_ste: Any  # straight-through codes [B, T', n_codes] float32
    semantic_embed: Any  # project_out(codes_ste) [B, T', d]
    g_mu: Any  # paralinguistic mu [B, d]
    g_logvar: Any  # [B, d]
    g_sample: Any  # mu + exp(lv/2) eps' (train) or mu [B, d]
    connector_out: Any  # A-hat = C(S + G) [B, T', d]
    tokens: Any  # [B, T'] int32
    pre_vae: Any  # semantic_transformer(z) [B, T', d]


def _dense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
    return torch_dense(features, fan_in, (EMBED, MLP), name, bias_axis=NORM)


def reparameterise(key, mu, logvar):
    """mu + exp(logvar / 2) * eps, eps ~ N(0, I) in float32 (same shape as mu)."""
    eps = jax.random.normal(key, mu.shape, jnp.float32)
    return (mu.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps)


class SemanticVAE(nn.Module):
    """e = semantic_transformer(z); mu = dense_mu(e); logvar = dense_var(e) (model.md §6)."""

    cfg: TransformerConfig
    compute_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "none"

    def setup(self):
        d = self.cfg.d_model
        self.semantic_transformer = ProjectedTransformer(self.cfg, self.compute_dtype,
                                                         scan_layers=self.scan_layers,
                                                         remat=self.remat)
        self.dense_mu = _dense(d, d)
        self.dense_var = _dense(d, d)

    def features(self, z):
        """z [B, T', d] -> pre-VAE features e [B, T', d]."""
        return self.semantic_transformer(z)

    def mu(self, z):
        """Inference path: z [B, T', d] -> mu [B, T', d] (dense_var is not evaluated)."""
        return self.dense_mu(self.features(z))

    def mu_step(self, rings, z, context: int):
        """Streaming `mu`: one chunk z [B, c, d] -> (rings, mu [B, c, d])."""
        rings, e = self.semantic_transformer.step(rings, z, context=context)
        return rings, self.dense_mu(e)

    def __call__(self, z):
        """z [B, T', d] -> (e, mu, logvar), each [B, T', d]."""
        e = self.features(z)
        return e, self.dense_mu(e), self.dense_var(e)


class SemanticConnector(nn.Module):
    """A-hat = semantic_transformer(S + G[:, None]) (model.md §9)."""

    cfg: TransformerConfig
    compute_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "none"

    def setup(self):
        self.semantic_transformer = ProjectedTransformer(self.cfg, self.compute_dtype,
                                                         scan_layers=self.scan_layers,
                                                         remat=self.remat)

    def __call__(self, s, g):
        """s [B, T', d], g [B, d] -> [B, T', d]."""
        return self.semantic_transformer(s + g[:, None, :].astype(s.dtype))

    def step(self, rings, s, g, context: int):
        """Streaming: one chunk s [B, c, d] with g [B, d] -> (rings, [B, c, d])."""
        return self.semantic_transformer.step(rings, s + g[:, None, :].astype(s.dtype),
                                              context=context)


def _strided_conv_mask(total: int, lengths):
    """Interceptor zeroing, before every strided conv, the frames beyond each item's length.

    The offline encoder pads a strided conv's input with E zeros (model.md §4); padding the
    mel instead would change an item's last token when T is not a multiple of hop. With
    `total` padded mel frames (a multiple of hop) and `lengths` [B] valid frames, the input
    of a conv at rate r has ceil(len / r) valid frames.
    """
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (isinstance(module, CausalConv1d) and context.method_name == "__call__"
                and module.stride > 1):
            (x,) = args
            rate = total // x.shape[1]
            valid = -(-lengths // rate)
            keep = jnp.arange(x.shape[1])[None, :] < valid[:, None]
            return next_fun(jnp.where(keep[..., None], x, 0), **kwargs)
        return next_fun(*args, **kwargs)

    return intercept


class SecoustiCodec(nn.Module):
    """The codec network; see the module docstring for the entry points."""

    config: CodecConfig
    # How the offline transformer layers run (ProjectedTransformer): a scan over stacked
    # params and its remat policy. Execution only: the parameters and outputs are the same.
    scan_layers: bool = False
    remat: str = "none"

    def setup(self):
        cfg = self.config
        dt, pdt = cfg.compute_dtype, cfg.param_dtype
        kw = dict(dtype=dtype_of(dt), param_dtype=dtype_of(pdt))
        loop = dict(scan_layers=self.scan_layers, remat=self.remat)
        self.encoder = SEANetEncoder(cfg.seanet, **kw)
        self.encoder_transformer = ProjectedTransformer(cfg.transformer, dt, **loop)
        self.vae_semantic_transformer = SemanticVAE(cfg.transformer, dt, **loop)
        self.fsq = FSQ(cfg.fsq, **kw)
        self.paralinguistic_encoder = ParalinguisticEncoder(cfg.paralinguistic)
        self.semantic_connector = SemanticConnector(cfg.transformer, dt, **loop)
        self.decoder_transformer = ProjectedTransformer(cfg.transformer, dt, **loop)
        self.decoder = SEANetDecoder(cfg.seanet, **kw)

    # ---- shared pieces ---------------------------------------------------------------
    def _encoder(self, mel, lengths=None):
        """mel [B, T, 80] -> z [B, ceil(T/hop), d] (float32).

        With `lengths` [B] (valid frames; T a multiple of hop), frames beyond an item's
        length are zeroed before each strided conv, so each item equals its own offline run.
        """
        mel = mel.astype(jnp.float32)
        if lengths is None or self.config.hop == 1:  # stride-1 causal: padding is harmless
            return self.encoder(mel).astype(jnp.float32)
        if mel.shape[1] % self.config.hop:
            raise ValueError(f"padded mel length {mel.shape[1]} must be a multiple of hop "
                             f"{self.config.hop} when lengths are given")
        lengths = jnp.asarray(lengths, jnp.int32)
        with nn.intercept_methods(_strided_conv_mask(mel.shape[1], lengths)):
            return self.encoder(mel).astype(jnp.float32)

    def _decode(self, x):
        """Decoder transformer + SEANet decoder: [B, T', d] -> mel [B, hop*T', 80] float32."""
        return self.decoder(self.decoder_transformer(x)).astype(jnp.float32)

    # ---- entry points ----------------------------------------------------------------
    def encode(self, mel, lengths=None) -> EncodeOutput:
        """mel [B, T, 80] (+ lengths [B]) -> EncodeOutput at the token rate (uses mu)."""
        z = self._encoder(mel, lengths)
        acoustic = self.encoder_transformer(z).astype(jnp.float32)
        mu = self.vae_semantic_transformer.mu(z).astype(jnp.float32)
        projected = self.fsq.project(mu)
        codes, tokens = self.fsq.quantize(projected)
        return EncodeOutput(z, acoustic, mu, projected, codes, tokens)

    def encode_tokens(self, mel, lengths=None):
        """mel [B, T, 80] (+ lengths [B]) -> tokens [B, T'] int32, the same as
        `encode(...).tokens`, without the acoustic stack (half the FLOPs of `encode`)."""
        mu = self.vae_semantic_transformer.mu(self._encoder(mel, lengths)).astype(jnp.float32)
        return self._tokens(mu)

    def _tokens(self, mu):
        """mu [B, T', d] float32 -> tokens [B, T'] int32 (FSQ project + quantise)."""
        return self.fsq.quantize(self.fsq.project(mu))[1]

    def prompt_embedding(self, mel, lengths=None):
        """Prompt mel [B, Tp, 80] (already cropped; lengths [B] | None) -> G = mu [B, d]."""
        mu, _ = self.paralinguistic_encoder(mel.astype(jnp.float32), lengths, train=False)
        return mu.astype(jnp.float32)

    def decode_tokens(self, tokens, g):
        """tokens [B, T'] int + G [B, d] -> mel [B, hop*T', 80]."""
        s = self.fsq.decode(tokens)
        return self._decode(self.semantic_connector(s, g))

    def decode_acoustic(self, acoustic):
        """A [B, T', d] -> mel [B, hop*T', 80]."""
        return self._decode(acoustic)

    # ---- streaming: the same data flow, one chunk at a time ------------------------------
    def stream_encode(self, state, mel, *, path: str, context: int, flush: bool = False):
        """One encoder chunk. state: {"seanet", "transformer"} (SEANet contexts, the KV
        rings of the path's stack); mel [B, m*hop, 80] (flush: the last frames, any
        length) -> (state, tokens [B, m] int32 for path "tokens" | A [B, m, d] float32)."""
        step = self.encoder.flush if flush else self.encoder.step
        seanet, z = step(state["seanet"], mel.astype(jnp.float32))
        z = z.astype(jnp.float32)
        if path == "acoustic":
            rings, a = self.encoder_transformer.step(state["transformer"], z, context=context)
            out = a.astype(jnp.float32)
        else:
            rings, mu = self.vae_semantic_transformer.mu_step(state["transformer"], z, context)
            out = self._tokens(mu.astype(jnp.float32))
        return {"seanet": seanet, "transformer": rings}, out

    def stream_decode(self, state, x, g, *, path: str, context: int):
        """One decoder chunk. state: {"connector", "transformer", "seanet"}; x: tokens
        [B, m] with G [B, d] (path "tokens") or A [B, m, d] (g None) -> (state,
        mel [B, hop*m, 80] float32)."""
        connector = state["connector"]
        if path == "tokens":
            connector, x = self.semantic_connector.step(connector, self.fsq.decode(x), g, context)
        rings, y = self.decoder_transformer.step(state["transformer"], x, context=context)
        seanet, mel = self.decoder.step(state["seanet"], y)
        return ({"connector": connector, "transformer": rings, "seanet": seanet},
                mel.astype(jnp.float32))

    def __call__(self, mel, prompt_mel, prompt_lengths=None, *, train: bool,
                 semantic_mel=None) -> TrainOutputs:
        """Training forward (training.md §2). mel [B, T, 80]; prompt_mel [B, Tp, 80];
        prompt_lengths [B] | None. train=True samples both VAEs (RNG stream "sample") and
        updates BatchNorm statistics (apply with mutable=["batch_stats"]). semantic_mel
        [B, T, 80] | None: the semantic branch reads this mel instead of `mel` (a training
        perturbation, `augment.semantic_warp`); A and D(A) always come from `mel`."""
        z = self._encoder(mel)
        acoustic = self.encoder_transformer(z).astype(jnp.float32)
        mel_from_acoustic = self._decode(acoustic)
        z_semantic = z if semantic_mel is None else self._encoder(semantic_mel)
        pre_vae, mu, logvar = self.vae_semantic_transformer(z_semantic)
        mu, logvar = mu.astype(jnp.float32), logvar.astype(jnp.float32)
        g_mu, g_logvar = self.paralinguistic_encoder(prompt_mel.astype(jnp.float32),
                                                     prompt_lengths, train=train)
        g_mu, g_logvar = g_mu.astype(jnp.float32), g_logvar.astype(jnp.float32)
        if train:
            sample = reparameterise(self.make_rng("sample"), mu, logvar)
            g_sample = reparameterise(self.make_rng("sample"), g_mu, g_logvar)
        else:
            sample, g_sample = mu, g_mu
        projected = self.fsq.project(sample)
        codes_ste, tokens = self.fsq.quantize(projected)
        semantic_embed = self.fsq.embed_codes(codes_ste)
        connector_out = self.semantic_connector(semantic_embed, g_sample).astype(jnp.float32)
        return TrainOutputs(acoustic=acoustic, mel_from_acoustic=mel_from_acoustic,
                            semantic_mu=mu, semantic_logvar=logvar, semantic_sample=sample,
                            fsq_projected=projected, codes_ste=codes_ste,
                            semantic_embed=semantic_embed, g_mu=g_mu, g_logvar=g_logvar,
                            g_sample=g_sample, connector_out=connector_out, tokens=tokens,
                            pre_vae=pre_vae.astype(jnp.float32))
